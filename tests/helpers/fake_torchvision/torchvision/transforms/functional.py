"""torchvision.transforms.functional (test-only stand-in): every attribute raises when called."""


def __getattr__(name: str):
    def unavailable(*args, **kwargs):
        raise RuntimeError(f"torchvision.transforms.functional.{name} is not available (test-only stand-in)")

    return unavailable

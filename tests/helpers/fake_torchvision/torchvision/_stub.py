"""Placeholders that fail loudly when used (see the package docstring)."""


class Unavailable:
    """Stands for any torchvision class open_clip imports; instantiating it raises."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError(f"{type(self).__name__} comes from the test-only torchvision stand-in and cannot run")


def named(name: str) -> type:
    return type(name, (Unavailable,), {})

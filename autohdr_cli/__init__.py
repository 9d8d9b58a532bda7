"""autohdr: learn a photo editor's look from before/after pairs and apply it to folders of photos."""

__version__ = "0.1.0"

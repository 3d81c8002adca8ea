"""The demo automation's own code: targets, the local stack, load, metrics and rendering. Tasks stay thin."""

"""Dataset readers, built-in datasets and task protocols."""
from .folder import Dataset, ImageRecord, read_dataset
from .images import ImageDecodeError, read_image
from .tasks import Task, resolve_task

__all__ = ["Dataset", "ImageRecord", "ImageDecodeError", "Task", "read_dataset", "read_image", "resolve_task"]

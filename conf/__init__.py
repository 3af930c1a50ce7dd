"""Settings for imgsim: read once from the environment (and an optional .env file)."""

from conf.settings import Settings, load_settings

__all__ = ["Settings", "load_settings"]

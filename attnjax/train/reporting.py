"""Result files of experiments: the atomic writers (from :mod:`attnjax.atomic_io`) and the environment record."""

from __future__ import annotations

import os
from typing import Any

from attnjax.atomic_io import atomic_open, save_figure, write_json, write_text, write_with

__all__ = ["atomic_open", "environment_info", "save_figure", "write_json", "write_text", "write_with"]


def environment_info() -> dict[str, Any]:
    """Versions and devices, recorded next to every result."""
    import platform

    import flax
    import jax
    import optax

    devices = jax.devices()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "jax": jax.__version__,
        "jaxlib": getattr(jax.lib, "__version__", None) or _jaxlib_version(),
        "flax": flax.__version__,
        "optax": optax.__version__,
        "backend": jax.default_backend(),
        "device_count": len(devices),
        "devices": [str(d) for d in devices],
        "device_kinds": sorted({d.device_kind for d in devices}),
        "cpu_count": os.cpu_count(),
    }


def _jaxlib_version() -> str | None:
    try:
        import jaxlib

        return jaxlib.__version__
    except (ImportError, AttributeError):
        return None

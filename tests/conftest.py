"""Test set-up: 8 fake CPU devices so every shard_map path runs without accelerators.

The flag must be set before the first JAX operation, which is why it lives here, at import time.
"""

import jax

jax.config.update("jax_num_cpu_devices", 8)

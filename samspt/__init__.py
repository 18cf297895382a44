"""samspt: Segment Anything with Self-Perception Tuning, from training to the production line.

The distribution maps the repository's top-level folders into this namespace:
``training/ -> samspt.training``, ``export/ -> samspt.export``, ``runtime/ -> samspt.runtime``,
``benchmarks/ -> samspt.benchmarks``.
"""

import logging

__version__ = "0.1.0"

# Library code logs; applications decide where the records go.
logging.getLogger(__name__).addHandler(logging.NullHandler())

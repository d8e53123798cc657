"""``api``: the dashboard and REST API extension, defined in :mod:`api.extension`.

Here so that the component registry, which looks inside ``extensions/``, finds it.
"""

from api.extension import factory

__all__ = ["factory"]

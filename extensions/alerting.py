"""``alerting``: alert rules and notifications, defined in :mod:`alerting.extension`.

Here so that the component registry, which looks inside ``extensions/``, finds it.
"""

from alerting.extension import factory

__all__ = ["factory"]

"""AppGuard's dashboard and REST API: an aiohttp application run by the ``api`` extension.

``extension`` (the component and its CLI entry), ``config`` (its settings), ``app`` (assembly
from feature modules), ``routing`` (the route table: roles, validation, deny by default),
``auth`` and ``users`` (accounts), ``pages`` (templates and the page shell), ``openapi``
(the document built from the route table). See docs/api.md.
"""

"""The shop's stock and its orders: ordering more than is left raises :class:`OutOfStock`."""

from __future__ import annotations

from dataclasses import dataclass


class OutOfStock(Exception):
    """An order asked for more of a product than the shop has."""


@dataclass(frozen=True)
class OrderLine:
    """So many of one product."""

    sku: str
    quantity: int


STOCK: dict[str, int] = {"espresso-beans": 12, "pour-over-kettle": 0, "paper-filters": 40}


def reserve(lines: list[OrderLine], stock: dict[str, int] = STOCK) -> dict[str, int]:
    """What would be left of the stock after the order; :class:`OutOfStock` if it cannot be served."""
    left = dict(stock)
    for line in lines:
        available = left.get(line.sku, 0)
        if line.quantity > available:
            raise OutOfStock(f"only {available} of {line.sku} left, {line.quantity} ordered")
        left[line.sku] = available - line.quantity
    return left

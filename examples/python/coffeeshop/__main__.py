"""``python -m coffeeshop``."""

from coffeeshop.app import main

main()

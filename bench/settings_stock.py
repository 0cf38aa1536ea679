"""Settings for the benchmark's baseline: PaidUp's settings, with dj-stripe processing webhooks
as it ships (its own view, its PaymentIntent mirror receiver) and PaidUp's receivers off.

DJANGO_SETTINGS_MODULE=bench.settings_stock; see bench/stock.py.
"""

from config.settings import *  # noqa: F403
from config.settings import INSTALLED_APPS

INSTALLED_APPS = ["bench.stock.StockBillingConfig" if app == "billing" else app for app in INSTALLED_APPS]
ROOT_URLCONF = "bench.stock_urls"

"""The admin app, with the console's AdminSite (support/admin_site.py) as `admin.site`.

In INSTALLED_APPS in place of "django.contrib.admin": every `@admin.register`, every ModelAdmin
and every `admin_site.admin_view` wrapper then uses StaffAdminSite and its second-factor rule.
Its own module, because Django picks an app's config from the classes its apps.py defines.
"""

from django.contrib.admin.apps import AdminConfig


class StaffAdminConfig(AdminConfig):
    default_site = "support.admin_site.StaffAdminSite"

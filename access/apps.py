from django.apps import AppConfig


class AccessConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "access"
    verbose_name = "API access"

    def ready(self) -> None:
        from access import schema  # noqa: F401  (registers the OpenAPI scheme with drf-spectacular)

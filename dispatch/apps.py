from django.apps import AppConfig


class DispatchConfig(AppConfig):
    name = "dispatch"
    verbose_name = "Dispatch"

    def ready(self) -> None:
        from dispatch import signals  # noqa: F401 - connects the ESP webhook receiver
        from dispatch.selectors import message_recipient_context
        from templates_registry.preview import recipient_lookup_register

        recipient_lookup_register(message_recipient_context)  # the registry's preview reads messages only through it

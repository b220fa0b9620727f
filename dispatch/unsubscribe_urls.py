"""The public one-click unsubscribe endpoint (mounted at /u/)."""

from django.urls import path

from dispatch import views

urlpatterns = [path("<str:token>", views.unsubscribe, name="unsubscribe")]

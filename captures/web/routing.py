from django.urls import path

from captures.web import consumers

websocket_urlpatterns = [
    path("ws/captures/<uuid:capture_id>/", consumers.CaptureConsumer.as_asgi()),
    path("ws/share/<str:token>/", consumers.ShareConsumer.as_asgi()),
]

from django.urls import path

from captures import api

urlpatterns = [
    path("api/captures/", api.captures, name="captures"),
    path("api/captures/<uuid:capture_id>/", api.capture_detail, name="capture"),
    path("api/captures/<uuid:capture_id>/stop/", api.capture_stop, name="capture-stop"),
    path("api/captures/<uuid:capture_id>/pcap", api.capture_pcap, name="capture-pcap"),
    path("api/captures/<uuid:capture_id>/analysis", api.capture_analysis,
         name="capture-analysis"),
    path("api/captures/<uuid:capture_id>/share/", api.capture_share, name="capture-share"),
    path("api/captures/<uuid:capture_id>/share/<str:token>/", api.capture_share_revoke,
         name="capture-share-revoke"),
    path("api/share/<str:token>/", api.share, name="share"),
    path("api/share/<str:token>/pcap", api.share_pcap, name="share-pcap"),
    path("api/share/<str:token>/analysis", api.share_analysis, name="share-analysis"),
    path("api/targets/", api.targets, name="targets"),
]

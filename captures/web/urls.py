from django.urls import path

from captures.web import api, diagram_api, postmortem, views
from captures.web.health import healthz, readyz
from captures.web.metrics import metrics_view

urlpatterns = [
    # Probes (captures/web/health.py): ProbeMiddleware answers these paths first; the routes
    # name the same views for reverse() and a stack without the middleware.
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),  # MetricsMiddleware answers it first too
    # Pages (captures.web.views); the JSON API follows.
    path("", views.capture_list, name="page-list"),
    path("captures/new/", views.capture_new, name="page-new"),
    path("captures/<uuid:capture_id>/", views.capture_detail, name="page-detail"),
    path("captures/<uuid:capture_id>/live/", views.capture_live, name="page-live"),
    path("captures/<uuid:capture_id>/pin/", views.capture_pin, name="page-pin"),
    path("captures/<uuid:capture_id>/delete/", views.capture_delete, name="page-delete"),
    path("captures/<uuid:capture_id>/share/", views.share_create, name="page-share-create"),
    path("captures/<uuid:capture_id>/share/<int:link_id>/revoke/", views.share_revoke,
         name="page-share-revoke"),
    path("captures/<uuid:capture_id>/keylog/delete/", views.keylog_delete,
         name="page-keylog-delete"),
    path("s/<str:token>/", views.share_page, name="page-share"),
    # Postmortems (captures/web/postmortem.py): the bundle, the diff of two captures.
    path("captures/<uuid:capture_id>/diff/", postmortem.diff_choose, name="page-diff-choose"),
    path("captures/<uuid:capture_id>/diff/<uuid:other_id>/", postmortem.diff_page,
         name="page-diff"),
    path("api/captures/<uuid:capture_id>/bundle", postmortem.capture_bundle,
         name="capture-bundle"),
    path("api/captures/<uuid:capture_id>/diff/<uuid:other_id>/", postmortem.capture_diff,
         name="capture-diff"),
    path("api/share/<str:token>/bundle", postmortem.share_bundle, name="share-bundle"),
    path("api/captures/", api.captures, name="captures"),
    path("api/captures/<uuid:capture_id>/", api.capture_detail, name="capture"),
    path("api/captures/<uuid:capture_id>/stop/", api.capture_stop, name="capture-stop"),
    path("api/captures/<uuid:capture_id>/pin/", api.capture_pin, name="capture-pin"),
    path("api/captures/<uuid:capture_id>/keylog", api.capture_keylog, name="capture-keylog"),
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
    # The diagram view (captures/web/diagram_api.py): layout chunks, frames, exports, notes.
    path("api/captures/<uuid:capture_id>/layout/", diagram_api.layout, name="capture-layout"),
    path("api/captures/<uuid:capture_id>/layout/rows/<int:chunk>/", diagram_api.layout_rows,
         name="capture-layout-rows"),
    path("api/captures/<uuid:capture_id>/frames/<int:file_index>/<int:number>/",
         diagram_api.frame, name="capture-frame"),
    path("api/captures/<uuid:capture_id>/export/<str:fmt>", diagram_api.export,
         name="capture-export"),
    path("api/captures/<uuid:capture_id>/notes/", diagram_api.capture_notes,
         name="capture-notes"),
    path("api/captures/<uuid:capture_id>/notes/<int:note_id>/", diagram_api.capture_note_delete,
         name="capture-note"),
    path("api/share/<str:token>/layout/", diagram_api.share_layout, name="share-layout"),
    path("api/share/<str:token>/layout/rows/<int:chunk>/", diagram_api.share_layout_rows,
         name="share-layout-rows"),
    path("api/share/<str:token>/frames/<int:file_index>/<int:number>/", diagram_api.share_frame,
         name="share-frame"),
    path("api/share/<str:token>/export/<str:fmt>", diagram_api.share_export,
         name="share-export"),
    path("api/share/<str:token>/notes/", diagram_api.share_notes, name="share-notes"),
]

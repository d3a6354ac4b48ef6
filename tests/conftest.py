"""Suite-wide fixtures: the real services (tests/support/services.py), one set per run."""

from tests.support.lab import lab, lab_traffic  # noqa: F401 - fixtures, found by name
from tests.support.services import (  # noqa: F401 - fixtures, found by name
    data_dir,
    django_db_modify_db_settings,
    service_settings,
    test_database_url,
    worker,
    worker_env,
)


def pytest_report_header(config):
    import captures.analysis

    return f"kviz analysis build: {captures.analysis.BUILD} (KVIZ_ANALYSIS_BUILD)"

"""Retention and search: a capture may be pinned (never expires), and keeps the kinds of its
analysis' findings for the list's search. Rows analysed before this are filled in by
`manage.py kviz_cleanup` (reading each stored analysis once), not here: a migration that reads
thousands of analysis files would hold up every deploy."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("captures", "0004_storedfile"),
    ]

    operations = [
        migrations.AddField(
            model_name="capture",
            name="pinned",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="capture",
            name="finding_kinds",
            field=models.TextField(blank=True, null=True),
        ),
    ]

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("captures", "0005_retention")]

    operations = [
        migrations.AddField(
            model_name="sharelink",
            name="hint",
            field=models.CharField(blank=True, default="", max_length=8),
        ),
    ]

"""Captures hold several files (one per vantage point); the single pcap_path becomes the first
StoredFile, with the vantage and interface names its meta file recorded."""

import json
from pathlib import Path

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def _meta(pcap_path: str) -> dict:
    meta = Path(settings.DATA_DIR) / (pcap_path + ".meta.json")
    try:
        document = json.loads(meta.read_text())
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def files_from_pcap_paths(apps, schema_editor):
    Capture = apps.get_model("captures", "Capture")
    StoredFile = apps.get_model("captures", "StoredFile")
    for capture in Capture.objects.exclude(pcap_path="").iterator():
        meta = _meta(capture.pcap_path)
        interfaces = meta.get("interfaces") if isinstance(meta.get("interfaces"), dict) else {}
        StoredFile.objects.create(
            capture=capture, position=0, path=capture.pcap_path,
            vantage=str(meta.get("vantage") or "")[:300], interfaces=interfaces,
            file_name=str((capture.target_spec or {}).get("file_name") or "")[:200],
            packets=capture.packets, bytes=capture.bytes)


def pcap_paths_from_files(apps, schema_editor):
    Capture = apps.get_model("captures", "Capture")
    StoredFile = apps.get_model("captures", "StoredFile")
    for part in StoredFile.objects.filter(position=0).exclude(path="").iterator():
        Capture.objects.filter(id=part.capture_id).update(pcap_path=part.path)


class Migration(migrations.Migration):

    dependencies = [
        ('captures', '0003_cluster_target_kinds'),
    ]

    operations = [
        migrations.AlterField(
            model_name='capture',
            name='target_kind',
            field=models.CharField(choices=[('upload', 'Upload'), ('local', 'Local'), ('lab', 'Lab'), ('pod', 'Pod'), ('node', 'Node'), ('service', 'Service'), ('path', 'Path')], max_length=16),
        ),
        migrations.AlterField(
            model_name='capture',
            name='bytes',
            field=models.PositiveBigIntegerField(default=0),
        ),
        migrations.CreateModel(
            name='StoredFile',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('position', models.PositiveSmallIntegerField()),
                ('role', models.CharField(blank=True, default='', max_length=40)),
                ('vantage', models.CharField(blank=True, default='', max_length=300)),
                ('interfaces', models.JSONField(blank=True, default=dict)),
                ('path', models.CharField(blank=True, default='', max_length=255)),
                ('file_name', models.CharField(blank=True, default='', max_length=200)),
                ('packets', models.PositiveBigIntegerField(default=0)),
                ('bytes', models.PositiveBigIntegerField(default=0)),
                ('error', models.TextField(blank=True, default='')),
                ('capture', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='files', to='captures.capture')),
            ],
            options={
                'ordering': ('position',),
                'constraints': [models.UniqueConstraint(fields=('capture', 'position'), name='one_file_per_position')],
            },
        ),
        migrations.RunPython(files_from_pcap_paths, pcap_paths_from_files),
        migrations.RemoveField(
            model_name='capture',
            name='pcap_path',
        ),
    ]

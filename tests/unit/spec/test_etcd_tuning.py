"""spec.etcd_tuning: an EtcdTuning document's errors name the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.errors import SpecError
from reconciler.spec.isolate import load_desired

SPECS = Path(__file__).resolve().parents[3] / "specs"


def test_tuning_spec_errors_name_file_and_field(tmp_path: Path) -> None:
    import shutil

    spec_dir = tmp_path / "specs"
    shutil.copytree(SPECS, spec_dir)
    etcd = spec_dir / "etcd.yaml"
    etcd.write_text(
        etcd.read_text()
        .replace("electionMultiplier: 10", "electionMultiplier: 3")
        .replace("ETCD_HEARTBEAT_INTERVAL: 100", 'ETCD_HEARTBEAT_INTERVAL: "{{ 100 }}"')
    )
    with pytest.raises(SpecError) as err:
        load_desired(spec_dir)
    text = "\n".join(str(i) for i in err.value.issues)
    assert "etcd.yaml:" in text and "spec.electionMultiplier" in text

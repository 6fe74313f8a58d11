"""The lake on S3 and DVC data on an S3 remote, against a real S3-compatible server
(moto_server on 127.0.0.1); endpoint and credentials come only from the AWS variables."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path

import pytest

from tarn.core.lake import Lake
from tarn.datasets import seed_adult
from tarn.errors import LakeError
from tests.support.project import set_param, sh
from tests.support.servers import AWS_KEYS, S3Server, free_port

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def tree_hashes(*dirs: Path) -> dict[str, str]:
    return {str(f.relative_to(d.parent)): hashlib.md5(f.read_bytes()).hexdigest()
            for d in dirs for f in sorted(d.rglob("*")) if f.is_file()}


def new_bucket(s3: S3Server) -> str:
    name = f"tarn-{uuid.uuid4().hex[:10]}"
    s3.client().create_bucket(Bucket=name)
    return name


def test_seed_snapshot_etl_from_s3_then_dvc_push_and_pull(repo_copy, s3):
    root = repo_copy
    bucket = new_bucket(s3)
    sh(root, "git", "init", "-q")
    set_param(root, "lake.url", f"s3://{bucket}/lake")
    set_param(root, "lake.seed.train_batches", 2)
    set_param(root, "lake.seed.test_batches", 1)
    res = sh(root, "tarn", "lake", "seed")
    out = res.stdout + res.stderr
    assert "0003-adult-test" in out
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(keys) == [f"lake/000{i}-adult-{p}/adult.csv"
                            for i, p in ((1, "train"), (2, "train"), (3, "test"))]

    sh(root, "dvc", "repro", "etl")  # snapshot (reads the bucket) and ETL
    manifest = json.loads((root / "data/snapshot/manifest.json").read_text())
    assert manifest["lake"] == f"s3://{bucket}/lake"
    report = json.loads((root / "reports/etl.json").read_text())
    assert report["total"]["written"] > 40_000
    before = tree_hashes(root / "data/snapshot", root / "data/curated")

    sh(root, "dvc", "remote", "add", "-d", "storage", f"s3://{bucket}/dvc")
    sh(root, "dvc", "push")
    assert any(o["Key"].startswith("dvc/files/md5/")
               for o in s3.client().list_objects_v2(Bucket=bucket, Prefix="dvc/")["Contents"])
    shutil.rmtree(root / ".dvc" / "cache")
    shutil.rmtree(root / "data" / "snapshot")
    shutil.rmtree(root / "data" / "curated")
    sh(root, "dvc", "pull", "--with-deps", "etl")
    assert tree_hashes(root / "data/snapshot", root / "data/curated") == before
    status = sh(root, "dvc", "status", "etl").stdout
    assert "changed" not in status and "modified" not in status


@pytest.mark.timeout(120)
def test_a_missing_bucket_is_named_and_never_created(s3):
    lake = Lake(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/lake")
    with pytest.raises(LakeError, match="does not exist") as e:
        seed_adult(lake, 1, 1)
    assert "aws s3 mb" in e.value.hint
    names = [b["Name"] for b in s3.client().list_buckets()["Buckets"]]
    assert not any(n.startswith("no-such-bucket") for n in names)


@pytest.mark.timeout(120)
def test_wrong_credentials_are_reported(tmp_path):
    """moto checks credentials against its IAM after the first requests (set-up)."""
    import boto3

    server = S3Server(tmp_path, auth_after=4)
    try:
        iam = boto3.client("iam", endpoint_url=server.endpoint, region_name="us-east-1",
                           aws_access_key_id="x", aws_secret_access_key="x")
        iam.create_user(UserName="tarn")
        key = iam.create_access_key(UserName="tarn")["AccessKey"]
        iam.put_user_policy(UserName="tarn", PolicyName="all", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        server.client(AWS_ACCESS_KEY_ID=key["AccessKeyId"],
                      AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"]).create_bucket(Bucket="guarded")
        opts = {"client_kwargs": {"endpoint_url": server.endpoint}}
        good = Lake("s3://guarded/lake", storage_options={
            **opts, "key": key["AccessKeyId"], "secret": key["SecretAccessKey"]})
        assert seed_adult(good, 1, 1) == ["0001-adult-train", "0002-adult-test"]
        bad = Lake("s3://guarded/lake", storage_options={**opts, "key": AWS_KEYS[
            "AWS_ACCESS_KEY_ID"], "secret": "wrong"})
        with pytest.raises(LakeError, match="access to s3://guarded denied") as e:
            bad.batches()
        assert "AWS_ACCESS_KEY_ID" in e.value.hint
    finally:
        server.stop()


@pytest.mark.timeout(120)
def test_an_endpoint_that_does_not_answer_fails_in_bounded_time():
    lake = Lake("s3://any-bucket/lake", storage_options={
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{free_port()}"}})
    with pytest.raises(LakeError, match="cannot (reach|use)"):
        lake.batches()

"""LanceDB on object storage: an s3:// URI, through an S3-compatible server on loopback (moto)."""
import numpy as np
import pandas as pd

from resources.lance import LanceDBResource


def test_indices_write_search_and_update_through_s3(s3_server):
    import boto3

    endpoint, options = s3_server
    res = LanceDBResource(uri="s3://flywheel/test-store", storage_options=options)
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(3, 8)).astype("float32")
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    chunks = pd.DataFrame({"chunk_id": ["c0", "c1", "c2"], "doc_id": ["d0", "d1", "d2"],
                           "text": ["the wing produces lift", "heat transfer in hypersonic flow", "shock waves at mach three"]})
    res.sync_chunk_table("t", chunks.iloc[:2], vecs[:2], model="m")
    idx, info = res.sync_chunk_table("t", chunks.iloc[1:], vecs[1:], model="m")   # d0 deleted, d2 added
    assert info == {"mode": "incremental", "rows_added": 1, "rows_deleted": 1}
    again = LanceDBResource(uri="s3://flywheel/test-store", storage_options=options).open("t")   # a fresh client
    assert again.count() == 2
    assert again.bm25("mach shock", 2)[0][0] == "c2"
    assert again.dense(vecs[2], 1)[0][0] == "c2"
    assert again.hybrid("mach shock", vecs[2], 2)[0][0] == "c2"
    assert again.bm25("wing lift", 2) == []
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="flywheel", Prefix="test-store/")["Contents"]]
    assert any(k.startswith("test-store/t.lance/") for k in keys)   # the table really lives in the bucket

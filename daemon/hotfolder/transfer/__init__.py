"""Streaming transfers: one-pass digests, request bodies and presigned S3 uploads, memory flat at any size.

Rules the package keeps:

* A file is never held in memory whole. Reads are ``CHUNK_SIZE`` at a time, and every upload body is a
  generator of those pieces with its exact length computed before the first byte is sent.
* A file is never followed through a symlink and only regular files are read (:mod:`.files`).
* What was hashed is what is sent: each step checks the file against the :class:`FileIdentity` recorded
  when it was hashed, before and after touching it, and says ``FILE_CHANGED`` otherwise.
* Credentials (a presigned URL's query, a form's policy and signature) never appear in a reason.
* Every failure leaves as a :class:`~hotfolder.errors.StepError` whose kind tells the pipeline what to
  do (retry, presign again, hash again, give up).

Modules, one concern each: :mod:`.files` (identity, opening, reading exactly the hashed bytes),
:mod:`.hashing` (digests), :mod:`.bodies` (base64 data-URI bodies and the one multipart/form-data
writer), :mod:`.s3` (presigned PUT and POST form, S3's refusals classified).
"""

from hotfolder.transfer.bodies import (
    FilePart,
    MultipartForm,
    base64_chunk_body,
    base64_json_body,
    base64_length,
    data_uri_prefix,
    form_data_name,
)
from hotfolder.transfer.files import CHUNK_SIZE, FileIdentity, check_unchanged, iter_file, open_checked
from hotfolder.transfer.hashing import SUPPORTED_DIGESTS, FileDigests, hash_file
from hotfolder.transfer.s3 import MAX_ERROR_BODY, classify_s3_error, post_form, put_presigned, redact_url

__all__ = [
    "CHUNK_SIZE",
    "MAX_ERROR_BODY",
    "SUPPORTED_DIGESTS",
    "FileDigests",
    "FileIdentity",
    "FilePart",
    "MultipartForm",
    "base64_chunk_body",
    "base64_json_body",
    "base64_length",
    "check_unchanged",
    "classify_s3_error",
    "data_uri_prefix",
    "form_data_name",
    "hash_file",
    "iter_file",
    "open_checked",
    "post_form",
    "put_presigned",
    "redact_url",
]

"""The `'storage.<key>'` options of the filesystem and delta connectors: object-store settings for one table's
bucket, as Flink passes `s3.*` keys. The keys are those of delta-rs and its object_store crate (the same names as
the `AWS_*`, `GOOGLE_*`, `AZURE_*` environment variables, in lower case): `storage.aws_region`,
`storage.aws_endpoint_url`, `storage.aws_server_side_encryption`, `storage.google_service_account`,
`storage.azure_storage_account_name`... Pure: checked at planning time, so a typo fails with its position instead
of reaching the store as an unknown key."""

from __future__ import annotations

from sql.errors import did_you_mean

PREFIX = "storage."

_AWS = (
    "access_key_id secret_access_key session_token token region default_region endpoint endpoint_url bucket "
    "checksum_algorithm conditional_put copy_if_not_exists container_credentials_relative_uri "
    "container_credentials_full_uri disable_tagging imdsv1_fallback metadata_endpoint request_payer role_arn "
    "role_session_name server_side_encryption sse_bucket_key_enabled sse_kms_key_id sse_customer_key_base64 "
    "skip_signature unsigned_payload virtual_hosted_style_request web_identity_token_file s3_express"
)
_GOOGLE = "service_account service_account_key application_credentials bucket skip_signature base_url bearer_token"
_AZURE = (
    "storage_account_name storage_account_key storage_client_id storage_client_secret storage_tenant_id "
    "storage_sas_key storage_token storage_use_emulator storage_endpoint client_id client_secret tenant_id "
    "authority_host msi_endpoint object_id msi_resource_id federated_token_file use_azure_cli skip_signature "
    "container_name disable_tagging use_fabric_endpoint endpoint"
)
#: the HTTP client's options, with or without a store's prefix
_CLIENT = "allow_http allow_invalid_certificates connect_timeout timeout proxy_url pool_idle_timeout user_agent"

KEYS: frozenset[str] = frozenset(
    [f"aws_{k}" for k in _AWS.split()]
    + [f"google_{k}" for k in _GOOGLE.split()]
    + [f"azure_{k}" for k in _AZURE.split()]
    + [f"{store}{k}" for store in ("", "aws_", "google_", "azure_") for k in _CLIENT.split()]
)

_OBJECT_SCHEMES = ("s3", "s3a", "gs", "az", "abfs", "abfss", "adl", "azure")


def key_problem(key: str) -> str | None:
    """What is wrong with a storage key (the part after `storage.`), or None."""
    if key.lower() in KEYS:
        return None
    hint = did_you_mean(PREFIX + key.lower(), sorted(PREFIX + k for k in KEYS))
    return (
        f"not an object-store option{hint}; the keys are delta-rs' (object_store's), such as "
        "storage.aws_region, storage.aws_endpoint_url, storage.aws_server_side_encryption, "
        "storage.google_service_account, storage.azure_storage_account_name"
    )


def path_problem(path: str) -> str | None:
    """Why a connector's 'path' names a storage timelapse cannot use (`hdfs://`, `http://`), or None."""
    head, sep, _ = path.partition("://")
    if not sep or len(head) <= 1 or head.lower() in (*_OBJECT_SCHEMES, "file"):
        return None  # a local path (a one-letter scheme is a Windows drive), file:// or an object store
    return f"the scheme {head.lower()}:// is not supported; use a local path, file://, s3://, gs:// or az://"


def is_object_uri(path: str) -> bool:
    head, sep, _ = path.partition("://")
    return bool(sep) and head.lower() in _OBJECT_SCHEMES

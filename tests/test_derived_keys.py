"""Keys per purpose: HKDF as RFC 5869 defines it, and distinct for each purpose."""

from contactbase.derived_keys import CURSORS, DOWNLOADS, derive, hkdf_sha256


def test_rfc_5869_test_case_1() -> None:
    key = hkdf_sha256(
        bytes.fromhex("0b" * 22),
        bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        salt=bytes.fromhex("000102030405060708090a0b0c"),
        length=42,
    )
    assert key.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_each_purpose_has_its_own_key() -> None:
    secret = b"s" * 32
    assert derive(secret, CURSORS) != derive(secret, DOWNLOADS)
    assert len(derive(secret, CURSORS)) == 32
    assert derive(secret, CURSORS) == derive(secret, CURSORS)
    assert secret not in (derive(secret, CURSORS), derive(secret, DOWNLOADS))

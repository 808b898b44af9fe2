//! The gateway key file: generated once with mode 0600, read back, refused when others can
//! read it or it holds garbage.

use crate::gateway::{NoAdvisories, load_or_create_key};
use gateway::AdvisoryCheck;

#[test]
fn key_file_is_private_and_stable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.key");
    let first = load_or_create_key(&path).unwrap();
    assert_eq!(load_or_create_key(&path).unwrap(), first);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create_key(&path).unwrap_err();
        assert!(err.to_string().contains("readable by others"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::write(&path, "zz\n").unwrap();
    let err = load_or_create_key(&path).unwrap_err();
    assert!(err.to_string().contains("64 hex digits"), "{err}");
}

#[test]
fn without_an_advisory_store_no_warning_is_authorised() {
    assert!(!NoAdvisories.is_authorised_warning("adv-1"));
}

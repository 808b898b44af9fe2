//! Operator accounts on a data directory whose platform is stopped (`citysec user ...
//! --offline`), with the same validation and hashing as the API (`web::accounts`).

use model::Timestamp;
use store::{Store, User};

/// Creates a user; without a password one is generated and returned (shown once).
pub async fn add(
    store: &dyn Store,
    name: &str,
    role: &str,
    password: Option<String>,
) -> anyhow::Result<(User, Option<String>)> {
    let role: web::Role = role.parse().map_err(|_| {
        anyhow::anyhow!(
            "unknown role {role:?} (expected one of: viewer, analyst, operator, supervisor, admin)"
        )
    })?;
    let (password, generated) = match password {
        Some(p) => (p, None),
        None => {
            let p = web::accounts::generate_password().map_err(anyhow::Error::msg)?;
            (p.clone(), Some(p))
        }
    };
    let user = web::accounts::new_user(name, role, &password, Timestamp::now())
        .map_err(anyhow::Error::msg)?;
    store.insert_user(&user).await?;
    Ok((user, generated))
}

/// Disables (or re-enables) a user; disabling ends its sessions and tokens.
pub async fn set_disabled(store: &dyn Store, name: &str, disabled: bool) -> anyhow::Result<User> {
    let mut user = store
        .get_user(name)
        .await?
        .ok_or_else(|| anyhow::anyhow!("user {name} not found"))?;
    user.disabled = disabled;
    user.updated_at = Timestamp::now();
    store.update_user(&user).await?;
    if disabled {
        store.delete_user_tokens(name).await?;
    }
    Ok(user)
}

/// Sets a user's password (generated when `None`, and returned); ends its sessions.
pub async fn set_password(
    store: &dyn Store,
    name: &str,
    password: Option<String>,
) -> anyhow::Result<Option<String>> {
    let mut user = store
        .get_user(name)
        .await?
        .ok_or_else(|| anyhow::anyhow!("user {name} not found"))?;
    let (password, generated) = match password {
        Some(p) => (p, None),
        None => {
            let p = web::accounts::generate_password().map_err(anyhow::Error::msg)?;
            (p.clone(), Some(p))
        }
    };
    web::accounts::validate_password(&password).map_err(anyhow::Error::msg)?;
    user.password_hash = web::accounts::hash_password(&password).map_err(anyhow::Error::msg)?;
    user.updated_at = Timestamp::now();
    store.update_user(&user).await?;
    store.delete_user_tokens(name).await?;
    Ok(generated)
}

/// A random password for an account (128 bits, hex).
pub fn generate_password() -> anyhow::Result<String> {
    web::accounts::generate_password().map_err(anyhow::Error::msg)
}

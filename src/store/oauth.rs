//! The built-in OAuth authorization server's rows: clients, grants, one-time codes and tokens
//! (codes and tokens as SHA-256 only), each change with its audit entry in the same statement.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{Channel, Store, StoreResult};

#[derive(Debug, Clone)]
pub struct OauthClientRecord {
    pub client_id: String,
    /// `dynamic` (RFC 7591) or `metadata_document`.
    pub registration: String,
    pub client_name: String,
    pub redirect_uris: Vec<String>,
    pub auth_method: String,
    pub secret_hash: Option<Vec<u8>>,
    pub fetched_at: Option<DateTime<Utc>>,
}

pub struct NewOauthClient<'a> {
    pub client_id: &'a str,
    pub registration: &'a str,
    pub client_name: &'a str,
    pub redirect_uris: &'a [String],
    pub auth_method: &'a str,
    pub secret_hash: Option<&'a [u8]>,
    pub metadata: &'a Value,
    pub request_id: Option<&'a str>,
    pub client_addr: Option<&'a str>,
}

/// A grant and whether it still stands (not revoked, its key neither revoked nor expired).
#[derive(Debug, Clone)]
pub struct GrantRecord {
    pub id: Uuid,
    pub client_id: String,
    pub client_name: String,
    pub api_key_id: Uuid,
    pub api_key_name: String,
    pub scopes: Vec<String>,
    pub resource: String,
    pub active: bool,
}

pub struct NewGrant<'a> {
    pub id: Uuid,
    pub client_id: &'a str,
    pub api_key_id: Uuid,
    pub api_key_name: &'a str,
    pub scopes: &'a [String],
    pub resource: &'a str,
    pub code_hash: &'a [u8],
    pub redirect_uri: &'a str,
    pub code_challenge: &'a str,
    pub code_expires_at: DateTime<Utc>,
    pub request_id: Option<&'a str>,
    pub client_addr: Option<&'a str>,
}

/// A redeemed authorization code.
#[derive(Debug, Clone)]
pub struct RedeemedCode {
    pub grant: GrantRecord,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub expired: bool,
}

/// What presenting a one-time secret (a code or a refresh token) found.
#[derive(Debug)]
pub enum Redemption<T> {
    /// First use: it is spent now.
    Fresh(T),
    /// Already spent: a replay. The grant it belonged to has been revoked.
    Replayed {
        grant_id: Uuid,
    },
    Unknown,
}

pub struct NewTokens<'a> {
    pub grant_id: Uuid,
    pub access_hash: &'a [u8],
    pub access_expires_at: DateTime<Utc>,
    pub refresh_hash: &'a [u8],
    pub refresh_expires_at: DateTime<Utc>,
    /// `oauth.token_issued` or `oauth.token_refreshed`.
    pub audit_kind: &'a str,
    pub client_id: &'a str,
    pub request_id: Option<&'a str>,
    pub client_addr: Option<&'a str>,
}

/// An access token that is valid now.
#[derive(Debug, Clone)]
pub struct AccessRecord {
    pub grant_id: Uuid,
    pub expires_at: DateTime<Utc>,
    /// The approving key's expiry.
    pub key_expires_at: Option<DateTime<Utc>>,
    pub client_id: String,
    pub client_name: String,
    pub api_key_id: Uuid,
    pub api_key_name: String,
    pub scopes: Vec<String>,
    pub resource: String,
}

/// An OAuth event without a row of its own to change (a denial, a refusal).
pub struct OauthAudit<'a> {
    /// `oauth.grant` (denied) or `oauth.refused`.
    pub kind: &'a str,
    pub outcome: &'a str,
    pub actor_kind: &'a str,
    pub actor_id: Option<&'a str>,
    pub actor_name: Option<&'a str>,
    pub error: Option<&'a str>,
    pub detail: &'a Value,
    pub request_id: Option<&'a str>,
    pub client_addr: Option<&'a str>,
}

impl Store {
    pub async fn register_oauth_client(&self, c: &NewOauthClient<'_>) -> StoreResult<()> {
        sqlx::query!(
            r#"
            WITH registered AS (
                INSERT INTO oauth_clients (client_id, registration, client_name, redirect_uris,
                                           auth_method, secret_hash, metadata, fetched_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7,
                        CASE WHEN $2 = 'metadata_document' THEN now() END)
                ON CONFLICT (client_id) DO UPDATE
                SET client_name = EXCLUDED.client_name, redirect_uris = EXCLUDED.redirect_uris,
                    auth_method = EXCLUDED.auth_method, metadata = EXCLUDED.metadata,
                    fetched_at = EXCLUDED.fetched_at
                RETURNING client_id, (xmax = 0) AS inserted
            )
            INSERT INTO audit_events (kind, outcome, actor_kind, actor_id, actor_name, request_id,
                                      client_addr, detail)
            SELECT 'oauth.client_registered', 'ok', 'oauth_client', $1, $3, $8, $9,
                   jsonb_build_object('registration', $2::text, 'redirect_uris', $4::text[],
                                      'auth_method', $5::text)
            FROM registered WHERE inserted
            "#,
            c.client_id,
            c.registration,
            c.client_name,
            c.redirect_uris,
            c.auth_method,
            c.secret_hash,
            c.metadata,
            c.request_id,
            c.client_addr,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn oauth_client(&self, client_id: &str) -> StoreResult<Option<OauthClientRecord>> {
        Ok(sqlx::query_as!(
            OauthClientRecord,
            "SELECT client_id, registration, client_name, redirect_uris, auth_method, secret_hash,
                    fetched_at
             FROM oauth_clients WHERE client_id = $1",
            client_id,
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Records an approval: the grant, its one-time code, and the audit entry.
    pub async fn create_oauth_grant(&self, g: &NewGrant<'_>) -> StoreResult<()> {
        sqlx::query!(
            r#"
            WITH grant_row AS (
                INSERT INTO oauth_grants (id, client_id, api_key_id, scopes, resource)
                VALUES ($1, $2, $3, $4, $5)
                RETURNING id
            ), code AS (
                INSERT INTO oauth_codes (code_hash, grant_id, redirect_uri, code_challenge,
                                         expires_at)
                SELECT $6, id, $7, $8, $9 FROM grant_row
            )
            INSERT INTO audit_events (kind, outcome, actor_kind, actor_id, actor_name, request_id,
                                      client_addr, target, detail)
            SELECT 'oauth.grant', 'approved', 'api_key', $3::uuid::text, $10, $11, $12, $2,
                   jsonb_build_object('grant_id', id, 'client_id', $2::text,
                                      'scopes', $4::text[], 'resource', $5::text)
            FROM grant_row
            "#,
            g.id,
            g.client_id,
            g.api_key_id,
            g.scopes,
            g.resource,
            g.code_hash,
            g.redirect_uri,
            g.code_challenge,
            g.code_expires_at,
            g.api_key_name,
            g.request_id,
            g.client_addr,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn audit_oauth(&self, a: &OauthAudit<'_>) -> StoreResult<()> {
        sqlx::query!(
            r#"
            INSERT INTO audit_events (kind, outcome, actor_kind, actor_id, actor_name, error,
                                      request_id, client_addr, detail)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            "#,
            a.kind,
            a.outcome,
            a.actor_kind,
            a.actor_id,
            a.actor_name,
            a.error,
            a.request_id,
            a.client_addr,
            a.detail,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn oauth_grant(&self, id: Uuid) -> StoreResult<Option<GrantRecord>> {
        Ok(sqlx::query_as!(
            GrantRecord,
            r#"
            SELECT g.id, g.client_id, c.client_name, g.api_key_id, k.name AS api_key_name,
                   g.scopes, g.resource,
                   (g.revoked_at IS NULL AND k.revoked_at IS NULL
                    AND (k.expires_at IS NULL OR k.expires_at > now())) AS "active!"
            FROM oauth_grants g
            JOIN oauth_clients c ON c.client_id = g.client_id
            JOIN api_keys k ON k.id = g.api_key_id
            WHERE g.id = $1
            "#,
            id,
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Spends an authorization code. A code presented twice revokes its grant (and with it
    /// every token issued from the first use), as OAuth 2.1 asks.
    pub async fn redeem_oauth_code(
        &self,
        code_hash: &[u8],
        client_id: &str,
    ) -> StoreResult<Redemption<RedeemedCode>> {
        let spent = sqlx::query!(
            r#"
            UPDATE oauth_codes SET used_at = now()
            WHERE code_hash = $1 AND used_at IS NULL
            RETURNING grant_id, redirect_uri, code_challenge, expires_at <= now() AS "expired!"
            "#,
            code_hash,
        )
        .fetch_optional(&self.pool)
        .await?;
        match spent {
            Some(row) => match self.oauth_grant(row.grant_id).await? {
                Some(grant) => Ok(Redemption::Fresh(RedeemedCode {
                    grant,
                    redirect_uri: row.redirect_uri,
                    code_challenge: row.code_challenge,
                    expired: row.expired,
                })),
                None => Ok(Redemption::Unknown),
            },
            None => {
                let used = sqlx::query_scalar!(
                    "SELECT grant_id FROM oauth_codes WHERE code_hash = $1",
                    code_hash
                )
                .fetch_optional(&self.pool)
                .await?;
                match used {
                    Some(grant_id) => {
                        self.revoke_oauth_grant(grant_id, "authorization code replayed", client_id)
                            .await?;
                        Ok(Redemption::Replayed { grant_id })
                    }
                    None => Ok(Redemption::Unknown),
                }
            }
        }
    }

    /// Spends a refresh token (rotation). A refresh token presented twice revokes its grant.
    pub async fn redeem_refresh_token(
        &self,
        token_hash: &[u8],
        client_id: &str,
    ) -> StoreResult<Redemption<GrantRecord>> {
        let spent = sqlx::query_scalar!(
            r#"
            UPDATE oauth_tokens SET used_at = now()
            WHERE token_hash = $1 AND kind = 'refresh' AND used_at IS NULL
              AND revoked_at IS NULL AND expires_at > now()
            RETURNING grant_id
            "#,
            token_hash,
        )
        .fetch_optional(&self.pool)
        .await?;
        if let Some(grant_id) = spent {
            return Ok(match self.oauth_grant(grant_id).await? {
                Some(grant) => Redemption::Fresh(grant),
                None => Redemption::Unknown,
            });
        }
        let reused = sqlx::query_scalar!(
            "SELECT grant_id FROM oauth_tokens
             WHERE token_hash = $1 AND kind = 'refresh' AND used_at IS NOT NULL",
            token_hash
        )
        .fetch_optional(&self.pool)
        .await?;
        match reused {
            Some(grant_id) => {
                self.revoke_oauth_grant(grant_id, "refresh token reused", client_id)
                    .await?;
                Ok(Redemption::Replayed { grant_id })
            }
            None => Ok(Redemption::Unknown),
        }
    }

    pub async fn issue_oauth_tokens(&self, t: &NewTokens<'_>) -> StoreResult<()> {
        sqlx::query!(
            r#"
            WITH issued AS (
                INSERT INTO oauth_tokens (token_hash, grant_id, kind, expires_at)
                VALUES ($1, $2, 'access', $3), ($4, $2, 'refresh', $5)
                RETURNING 1
            )
            INSERT INTO audit_events (kind, outcome, actor_kind, actor_id, request_id,
                                      client_addr, detail)
            SELECT $6, 'ok', 'oauth_client', $7, $8, $9,
                   jsonb_build_object('grant_id', $2::uuid, 'access_expires_at', $3::timestamptz)
            FROM (SELECT count(*) FROM issued) AS n
            "#,
            t.access_hash,
            t.grant_id,
            t.access_expires_at,
            t.refresh_hash,
            t.refresh_expires_at,
            t.audit_kind,
            t.client_id,
            t.request_id,
            t.client_addr,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Ends a grant and every token issued under it. False when it had already ended.
    pub async fn revoke_oauth_grant(
        &self,
        grant_id: Uuid,
        reason: &str,
        client_id: &str,
    ) -> StoreResult<bool> {
        let revoked = sqlx::query_scalar!(
            r#"
            WITH revoked AS (
                UPDATE oauth_grants SET revoked_at = now(), revoked_reason = $2
                WHERE id = $1 AND revoked_at IS NULL
                RETURNING id
            ), audit AS (
                INSERT INTO audit_events (kind, outcome, actor_kind, actor_id, error, detail)
                SELECT 'oauth.grant_revoked', 'ok', 'oauth_client', $3, $2,
                       jsonb_build_object('grant_id', id)
                FROM revoked
            ), wake AS (
                SELECT pg_notify($4, '') FROM revoked
            )
            SELECT count(*) AS "n!" FROM revoked LEFT JOIN wake ON true
            "#,
            grant_id,
            reason,
            client_id,
            Channel::Keys.name(),
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(revoked > 0)
    }

    /// RFC 7009: a refresh token ends its grant; an access token ends itself. Only `client_id`'s
    /// own tokens; anything else is ignored (the endpoint answers 200 either way).
    pub async fn revoke_oauth_token(&self, token_hash: &[u8], client_id: &str) -> StoreResult<()> {
        let found = sqlx::query!(
            r#"
            SELECT t.kind, t.grant_id FROM oauth_tokens t
            JOIN oauth_grants g ON g.id = t.grant_id
            WHERE t.token_hash = $1 AND g.client_id = $2
            "#,
            token_hash,
            client_id,
        )
        .fetch_optional(&self.pool)
        .await?;
        let Some(found) = found else {
            return Ok(());
        };
        if found.kind == "refresh" {
            self.revoke_oauth_grant(found.grant_id, "revoked by the client", client_id)
                .await?;
            return Ok(());
        }
        sqlx::query!(
            r#"
            WITH revoked AS (
                UPDATE oauth_tokens SET revoked_at = now()
                WHERE token_hash = $1 AND revoked_at IS NULL
                RETURNING grant_id
            ), wake AS (
                SELECT pg_notify($3, '') FROM revoked
            )
            INSERT INTO audit_events (kind, outcome, actor_kind, actor_id, detail)
            SELECT 'oauth.token_revoked', 'ok', 'oauth_client', $2,
                   jsonb_build_object('grant_id', grant_id, 'token', 'access')
            FROM revoked LEFT JOIN wake ON true
            "#,
            token_hash,
            client_id,
            Channel::Keys.name(),
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The access token with this hash, if it is valid now: not expired or revoked, its grant
    /// standing, the approving key neither revoked nor expired.
    pub async fn oauth_access(&self, token_hash: &[u8]) -> StoreResult<Option<AccessRecord>> {
        Ok(sqlx::query_as!(
            AccessRecord,
            r#"
            SELECT g.id AS grant_id, t.expires_at, k.expires_at AS key_expires_at, g.client_id, c.client_name, g.api_key_id,
                   k.name AS api_key_name, g.scopes, g.resource
            FROM oauth_tokens t
            JOIN oauth_grants g ON g.id = t.grant_id
            JOIN oauth_clients c ON c.client_id = g.client_id
            JOIN api_keys k ON k.id = g.api_key_id
            WHERE t.token_hash = $1 AND t.kind = 'access'
              AND t.revoked_at IS NULL AND t.expires_at > now()
              AND g.revoked_at IS NULL
              AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())
            "#,
            token_hash,
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Drops codes and tokens that expired before `older_than`, at most `limit` of each
    /// (maintenance; a spent code is kept a while so that a replay is still recognised).
    pub async fn purge_expired_oauth(
        &self,
        older_than: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<u64> {
        let codes = sqlx::query!(
            "DELETE FROM oauth_codes WHERE code_hash IN (
                 SELECT code_hash FROM oauth_codes WHERE expires_at < $1 LIMIT $2)",
            older_than,
            limit,
        )
        .execute(&self.pool)
        .await?
        .rows_affected();
        let tokens = sqlx::query!(
            "DELETE FROM oauth_tokens WHERE token_hash IN (
                 SELECT token_hash FROM oauth_tokens WHERE expires_at < $1 LIMIT $2)",
            older_than,
            limit,
        )
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(codes + tokens)
    }
}

//! memory.search's two routes: a query the table's statistics call common ranks only its newest
//! matches (found walking the recency buckets of 16,384 items, newest first), every other query
//! ranks all of its matches; neither repeats an item.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

/// `n` items whose text is `text`, tagged `all`, the newest created `age_secs` ago and each
/// older by a second; ids are UUIDv7 of the creation time, as the server makes them. Items are
/// numbered into recency buckets in the order they are inserted.
async fn seed(app: &TestApp, n: i32, text: &str, age_secs: i32) {
    sqlx::query(
        "INSERT INTO memory_items (id, text, tags, created_at)
         SELECT (lpad(to_hex((extract(epoch FROM at) * 1000)::bigint), 12, '0')
                 || '7' || substr(md5(random()::text || g), 1, 3)
                 || '8' || substr(md5(random()::text || g), 1, 15))::uuid, $2, '{all}', at
         FROM (SELECT g, now() - make_interval(secs => $3 + g) AS at
               FROM generate_series(0, $1 - 1) g) s",
    )
    .bind(n)
    .bind(text)
    .bind(age_secs)
    .execute(app.pool())
    .await
    .unwrap();
}

async fn search(app: &TestApp, query: &str, tags: &[&str], limit: u32) -> Vec<Value> {
    let (status, body) = app
        .orchestrate_json(json!({"intent": "memory.search",
                                 "inputs": {"query": query, "tags": tags, "limit": limit}}))
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    body["result"]["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .clone()
}

#[tokio::test]
async fn common_queries_rank_their_newest_matches_and_rare_ones_rank_all() {
    let app = spawn_app().await;
    // Bucket 0 (oldest): the best match of `alpha` there is (it says it four times), three
    // `omega` items, five `beta` ones, filler.
    seed(&app, 1, "alpha alpha alpha alpha old", 300_000).await;
    seed(&app, 3, "omega far back", 250_000).await;
    seed(&app, 5, "beta long ago", 200_000).await;
    seed(&app, 16_384 - 9, "filler words only", 150_000).await;
    // Bucket 1: a whole bucket saying `alpha` once, which makes it a common word.
    seed(&app, 16_384, "alpha middle", 100_000).await;
    // Bucket 2 starts with 600 that say `alpha` once and 10 `beta`; then the topic drifts:
    // the newest 39,990 items (the rest of bucket 2, buckets 3 and 4) never say `alpha`.
    seed(&app, 600, "alpha recent note", 60_000).await;
    seed(&app, 10, "beta recent", 50_000).await;
    seed(&app, 39_990, "filler words only", 0).await;
    sqlx::query("ANALYZE memory_items")
        .execute(app.pool())
        .await
        .unwrap();

    // Common: past the drift, the newest bucket holding matches fills the candidates, ranked
    // among themselves; the old best match is not among them.
    for tags in [&[][..], &["all"][..]] {
        let alpha = search(&app, "alpha", tags, 5).await;
        assert_eq!(alpha.len(), 5);
        assert!(
            alpha.iter().all(|i| i["text"] == "alpha recent note"),
            "tags {tags:?}: {alpha:?}"
        );
    }

    // Rare: every match ranked, however old.
    let omega = search(&app, "omega", &[], 10).await;
    assert_eq!(omega.len(), 3, "{omega:?}");

    // Every match, each once, old and new.
    let beta = search(&app, "beta", &["all"], 50).await;
    let mut ids: Vec<&str> = beta
        .iter()
        .map(|i| i["item_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 15, "{beta:?}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 15, "no item twice");

    // A rare query names the old best `alpha` item first once it is asked for precisely.
    let exact = search(&app, "alpha old", &[], 3).await;
    assert_eq!(exact[0]["text"], "alpha alpha alpha alpha old", "{exact:?}");
}

//! memory.search's two routes: a common query ranks only its newest matches (within the newest
//! 20,000 items), every other query ranks all of its matches; neither repeats an item.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

/// `n` items whose text is `text`, the newest created `age_secs` ago and each older by a
/// second; ids are UUIDv7 of the creation time, as the server makes them.
async fn seed(app: &TestApp, n: i32, text: &str, age_secs: i32) {
    sqlx::query(
        "INSERT INTO memory_items (id, text, created_at)
         SELECT (lpad(to_hex((extract(epoch FROM at) * 1000)::bigint), 12, '0')
                 || '7' || substr(md5(random()::text || g), 1, 3)
                 || '8' || substr(md5(random()::text || g), 1, 15))::uuid, $2, at
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

async fn search(app: &TestApp, query: &str, limit: u32) -> Vec<Value> {
    let (status, body) = app
        .orchestrate_json(json!({"intent": "memory.search",
                                 "inputs": {"query": query, "limit": limit}}))
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
    // Oldest first: beyond the newest 20,000 items, the best match of `alpha` there is
    // (it says it four times), three `omega` items and five `beta` ones.
    seed(&app, 1, "alpha alpha alpha alpha old", 200_000).await;
    seed(&app, 3, "omega far back", 150_000).await;
    seed(&app, 5, "beta long ago", 120_000).await;
    seed(&app, 25_000, "filler words only", 1_000).await;
    // The newest: 100 that say `alpha` once, 10 `beta`.
    seed(&app, 10, "beta recent", 500).await;
    seed(&app, 100, "alpha recent note", 0).await;
    sqlx::query("ANALYZE memory_items")
        .execute(app.pool())
        .await
        .unwrap();

    // Common (100 of the newest 2,000 match): the newest matches, ranked among themselves.
    let alpha = search(&app, "alpha", 5).await;
    assert_eq!(alpha.len(), 5);
    assert!(
        alpha.iter().all(|i| i["text"] == "alpha recent note"),
        "{alpha:?}"
    );

    // Rare: every match ranked, however old.
    let omega = search(&app, "omega", 10).await;
    assert_eq!(omega.len(), 3, "{omega:?}");

    // Common, but its window holds fewer than asked for: all 15 matches, each once.
    let beta = search(&app, "beta", 50).await;
    let mut ids: Vec<&str> = beta
        .iter()
        .map(|i| i["item_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 15, "{beta:?}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 15, "no item twice");

    // A rare query names the old best `alpha` item first once it is asked for precisely.
    let exact = search(&app, "alpha old", 3).await;
    assert_eq!(exact[0]["text"], "alpha alpha alpha alpha old", "{exact:?}");
}

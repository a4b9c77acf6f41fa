//! The SQL API (`cairn.enqueue`, `cairn.enqueue_many`, `cairn.result`,
//! `cairn.cancel`) and its JSON -> protobuf encoder, checked against the Rust
//! conversion (`cairn_payload::json`) byte for byte.

use anyhow::{ensure, Context, Result};
use cairn_payload::json::json_to_arguments;

use crate::pg::fresh_db;

/// A seeded generator of JSON texts covering every kind the encoder
/// distinguishes, and the edges: i64 and u64 bounds, integers past u64,
/// fractions, empty and non-ASCII keys (whose jsonb order differs from
/// serde_json's), escapes, nesting.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    fn string(&mut self) -> String {
        let pieces = [
            "", "a", "b", "aa", "ab", "B", "z", "key", "é", "ü", "日本", "😀", "\\n", "\\\"",
            "\\\\", "\\u00e9", "\\t", " ", "~", "0", "10", "9",
        ];
        let n = self.below(4);
        let s: String = (0..n).map(|_| self.pick(&pieces)).collect();
        format!("\"{s}\"")
    }

    fn number(&mut self) -> String {
        match self.below(10) {
            0 => self
                .pick(&[
                    "0",
                    "-1",
                    "1",
                    "9223372036854775807",
                    "-9223372036854775808",
                    "9223372036854775808",
                    "18446744073709551615",
                    "18446744073709551616",
                    "-9223372036854775809",
                    "123456789012345678901234567890",
                ])
                .to_owned(),
            1 | 2 => (self.next() as i64).to_string(),
            3 => self.next().to_string(),
            4 | 5 => ((self.next() % 2001) as i64 - 1000).to_string(),
            6 => self
                .pick(&[
                    "0.5",
                    "-0.25",
                    "1.0",
                    "100.000",
                    "3.141592653589793",
                    "1e3",
                    "2.5E-3",
                    "1e22",
                    "-7e-10",
                ])
                .to_owned(),
            _ => {
                // k / 10^d: decimal fractions both sides parse correctly rounded.
                let k = (self.next() % (1 << 53)) as i64 * if self.below(2) == 0 { 1 } else { -1 };
                let d = 1 + self.below(15) as u32;
                let digits = format!("{:0>width$}", k.unsigned_abs(), width = d as usize + 1);
                let (int, frac) = digits.split_at(digits.len() - d as usize);
                format!("{}{int}.{frac}", if k < 0 { "-" } else { "" })
            }
        }
    }

    fn value(&mut self, depth: u32) -> String {
        let kinds = if depth == 0 { 5 } else { 7 };
        match self.below(kinds) {
            0 => "null".into(),
            1 => self.pick(&["true", "false"]).into(),
            2 => self.number(),
            3 | 4 => self.string(),
            5 => {
                let n = self.below(4);
                let items: Vec<String> = (0..n).map(|_| self.value(depth - 1)).collect();
                format!("[{}]", items.join(","))
            }
            _ => self.object(depth - 1),
        }
    }

    fn object(&mut self, depth: u32) -> String {
        let n = self.below(5);
        let entries: Vec<String> = (0..n)
            .map(|_| format!("{}:{}", self.string(), self.value(depth)))
            .collect();
        format!("{{{}}}", entries.join(","))
    }
}

#[tokio::test]
async fn sql_json_arguments_encode_exactly_as_the_rust_conversion() -> Result<()> {
    let db = fresh_db().await?;
    let mut gen = Gen(0x00C0_FFEE);
    let texts: Vec<String> = (0..1500).map(|_| gen.object(3)).collect();
    let array = format!("[{}]", texts.join(","));
    let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT e::text, cairn.args_from_json(e) FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS a(e, i) ORDER BY i",
    )
    .bind(&array)
    .fetch_all(&db.pool)
    .await?;
    ensure!(rows.len() == texts.len());
    for (original, (as_jsonb, sql_bytes)) in texts.iter().zip(&rows) {
        // The SQL function sees jsonb, which normalizes numbers (`1e3` is
        // `1000`) and drops duplicate keys; the contract is the Rust
        // conversion of that same JSON.
        let value: serde_json::Value = serde_json::from_str(as_jsonb)
            .with_context(|| format!("parsing jsonb output {as_jsonb}"))?;
        let rust_bytes = cairn_payload::encode_arguments(&json_to_arguments(&value)?);
        ensure!(
            *sql_bytes == rust_bytes,
            "encodings differ for {original} (jsonb {as_jsonb}):\n sql  {}\n rust {}",
            hex::encode(sql_bytes),
            hex::encode(&rust_bytes)
        );
    }
    Ok(())
}

#[tokio::test]
async fn sql_enqueue_stores_the_encoded_arguments() -> Result<()> {
    let db = fresh_db().await?;
    let json = r#"{"name": "Ada", "n": -3, "tags": ["x", 1.5, null], "nested": {"ok": true}}"#;
    let id: i64 = sqlx::query_scalar("SELECT cairn.enqueue('m', 'a', $1::text::jsonb)")
        .bind(json)
        .fetch_one(&db.pool)
        .await?;
    let args: Vec<u8> = sqlx::query_scalar("SELECT args FROM cairn.actions WHERE id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await?;
    let expected = json_to_arguments(&serde_json::from_str(json)?)?;
    ensure!(args == cairn_payload::encode_arguments(&expected));
    ensure!(cairn_payload::decode_arguments(&args)? == expected);
    Ok(())
}

#[tokio::test]
async fn sql_enqueue_overloads_take_untyped_json_jsonb_and_protobuf_bytes() -> Result<()> {
    let db = fresh_db().await?;
    let ids: (i64, i64, i64, i64, i64) = sqlx::query_as(
        r#"SELECT cairn.enqueue('m', 'a'),
                  cairn.enqueue('m', 'a', '{"x": 1}'),
                  cairn.enqueue('m', 'a', '{"x": 1}'::jsonb, priority => 2),
                  cairn.enqueue('m', 'a', cairn.args_from_json('{"x": 1}'), delay => interval '1 hour'),
                  cairn.enqueue('m', 'a', max_attempts => 4, idempotency_key => 'k', timeout_ms => 500)"#,
    )
    .fetch_one(&db.pool)
    .await?;
    type Row = (i64, Vec<u8>, i32, bool, Option<i32>, Option<i64>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, args, priority, run_at > now() + interval '59 minutes', max_attempts, timeout_ms FROM cairn.actions ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await?;
    let x1 = hex::decode("0a090a017812040a021802")?;
    ensure!(rows.len() == 5 && rows[0].0 == ids.0 && rows[4].0 == ids.4);
    ensure!(rows[0].1.is_empty(), "no args is an empty message");
    ensure!(
        rows[1].1 == x1 && rows[2].1 == x1 && rows[3].1 == x1,
        "{rows:?}"
    );
    ensure!(rows[2].2 == 2 && rows[3].3 && !rows[2].3, "{rows:?}");
    ensure!(rows[4].4 == Some(4) && rows[4].5 == Some(500), "{rows:?}");
    Ok(())
}

#[tokio::test]
async fn sql_enqueue_rejects_arguments_that_are_not_an_object() -> Result<()> {
    let db = fresh_db().await?;
    let err = sqlx::query("SELECT cairn.enqueue('m', 'a', '[1, 2]')")
        .execute(&db.pool)
        .await
        .err()
        .context("an array was accepted as arguments")?;
    ensure!(err.to_string().contains("must be a JSON object"), "{err}");
    let err = sqlx::query("SELECT cairn.enqueue('', 'a')")
        .execute(&db.pool)
        .await
        .err()
        .context("an empty module was accepted")?;
    ensure!(err.to_string().contains("non-empty"), "{err}");
    Ok(())
}

#[tokio::test]
async fn sql_enqueue_many_from_json_returns_ids_in_order() -> Result<()> {
    let db = fresh_db().await?;
    let ids: Vec<i64> = sqlx::query_scalar(
        r#"SELECT cairn.enqueue_many('[
            {"module": "m", "name": "first", "args": {"n": 1}},
            {"module": "m", "name": "second", "delay": "10 minutes", "priority": -1},
            {"module": "m", "name": "third", "idempotency_key": "k"},
            {"module": "m", "name": "fourth", "idempotency_key": "k"}
        ]')"#,
    )
    .fetch_one(&db.pool)
    .await?;
    ensure!(ids.len() == 4 && ids[2] == ids[3], "{ids:?}");
    let names: Vec<String> =
        sqlx::query_scalar("SELECT name FROM cairn.actions WHERE id = ANY($1) ORDER BY id")
            .bind(&ids)
            .fetch_all(&db.pool)
            .await?;
    ensure!(names == ["first", "second", "third"], "{names:?}");
    let first: String = sqlx::query_scalar("SELECT name FROM cairn.actions WHERE id = $1")
        .bind(ids[0])
        .fetch_one(&db.pool)
        .await?;
    ensure!(first == "first");
    let err =
        sqlx::query(r#"SELECT cairn.enqueue_many('[{"module": "m", "name": "a", "prio": 1}]')"#)
            .execute(&db.pool)
            .await
            .err()
            .context("an unknown key was accepted")?;
    ensure!(err.to_string().contains("unknown keys: prio"), "{err}");
    Ok(())
}

#[tokio::test]
async fn sql_result_and_cancel_report_the_row() -> Result<()> {
    let db = fresh_db().await?;
    let id: i64 = sqlx::query_scalar("SELECT cairn.enqueue('m', 'a')")
        .fetch_one(&db.pool)
        .await?;
    let (status, attempts, result): (String, i32, Option<Vec<u8>>) =
        sqlx::query_as("SELECT status, attempts, result FROM cairn.result($1)")
            .bind(id)
            .fetch_one(&db.pool)
            .await?;
    ensure!(status == "queued" && attempts == 0 && result.is_none());
    let cancel = || sqlx::query_scalar::<_, bool>("SELECT cairn.cancel($1)").bind(id);
    let first = cancel().fetch_one(&db.pool).await?;
    let second = cancel().fetch_one(&db.pool).await?;
    ensure!(first && !second, "cancel: {first} then {second}");
    let status: String = sqlx::query_scalar("SELECT status FROM cairn.result($1)")
        .bind(id)
        .fetch_one(&db.pool)
        .await?;
    ensure!(status == "cancelled");
    let none: Option<String> = sqlx::query_scalar("SELECT status FROM cairn.result(424242)")
        .fetch_optional(&db.pool)
        .await?;
    ensure!(none.is_none());
    Ok(())
}

#[tokio::test]
async fn migrating_again_is_a_no_op() -> Result<()> {
    let db = fresh_db().await?;
    let applied: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM cairn._sqlx_migrations")
            .fetch_all(&db.pool)
            .await?;
    let known = cairn::db::MIGRATOR.iter().count();
    ensure!(
        applied.len() == known && applied.iter().all(|(_, ok)| *ok),
        "{applied:?}"
    );
    cairn::db::migrate(&db.pool).await?;
    Ok(())
}

#[tokio::test]
async fn sql_payload_to_json_reads_payloads_as_the_rust_conversion_does() -> Result<()> {
    use cairn_payload::{json, WorkflowArgumentValue as V, WorkflowErrorValue};

    #[derive(serde::Serialize)]
    struct Point {
        x: i64,
        y: f64,
    }

    let db = fresh_db().await?;
    let mut payloads: Vec<Vec<u8>> = Vec::new();
    // Every JSON kind, through the Rust conversion...
    let mut gen = Gen(0xDEC0DE);
    for _ in 0..300 {
        let value: serde_json::Value = serde_json::from_str(&gen.value(3))?;
        payloads.push(cairn_payload::serialize_result_payload(
            json::json_to_value(&value),
        ));
    }
    // ...and the kinds JSON cannot produce.
    payloads.push(cairn_payload::serialize_result_payload(V::tuple([
        V::int(1),
        V::string("a"),
    ])));
    payloads.push(cairn_payload::serialize_result_payload(
        cairn_payload::to_value(&Point {
            x: -7,
            y: 0.1 + 0.2,
        })?,
    ));
    for f in [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        5e-324,
        f64::MAX,
        -0.0,
        1.0,
    ] {
        payloads.push(cairn_payload::serialize_result_payload(V::double(f)));
    }
    payloads.push(cairn_payload::serialize_result_payload(V { kind: None }));
    payloads.push(cairn_payload::serialize_result_payload(V::dict([
        ("k".to_owned(), V::int(1)),
        ("k".to_owned(), V::int(2)),
    ])));
    payloads.push(cairn_payload::serialize_error_payload(WorkflowErrorValue {
        r#type: "ValueError".into(),
        module: "my_crate::errors".into(),
        message: "bad ✓".into(),
        traceback: String::new(),
        values: Some(cairn_payload::WorkflowDictArgument {
            entries: vec![cairn_payload::WorkflowArgument {
                key: "code".into(),
                value: Some(V::int(42)),
            }],
        }),
        type_hierarchy: vec!["ValueError".into(), "Exception".into()],
    }));
    payloads.push(cairn_payload::serialize_error_payload(
        WorkflowErrorValue::default(),
    ));

    for payload in &payloads {
        let expected = json::payload_to_json(payload)?;
        let (equal, sql): (bool, String) = sqlx::query_as(
            "SELECT cairn.payload_to_json($1) = $2::text::jsonb, cairn.payload_to_json($1)::text",
        )
        .bind(payload)
        .bind(expected.to_string())
        .fetch_one(&db.pool)
        .await
        .with_context(|| format!("decoding {}", hex::encode(payload)))?;
        ensure!(
            equal,
            "SQL {sql}\nRust {expected}\npayload {}",
            hex::encode(payload)
        );
    }
    let err = sqlx::query("SELECT cairn.payload_to_json(cairn.args_from_json('{\"x\": 1}'))")
        .execute(&db.pool)
        .await
        .err()
        .context("a payload without result or error was accepted")?;
    ensure!(err.to_string().contains("neither"), "{err}");
    Ok(())
}

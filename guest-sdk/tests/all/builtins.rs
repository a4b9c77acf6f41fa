//! The built-in dependency types' APIs, over the test doubles.

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_payload::WorkflowArgumentValue as V;
use cairn_sdk::enqueue::EnqueueOptions;
use cairn_sdk::http::{Request, Response};
use cairn_sdk::testing::{FixedConfig, MemoryKv, RecordingEnqueue, ScriptedHttp};
use cairn_sdk::{Config, Enqueue, Error, Http, Kv};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Profile {
    name: String,
    visits: u32,
}

#[test]
fn kv_get_set_delete() {
    let kv = Kv::new(MemoryKv::new());
    assert_eq!(kv.get("a").unwrap(), None);
    kv.set("a", b"1").unwrap();
    assert_eq!(kv.get("a").unwrap().as_deref(), Some(&b"1"[..]));
    assert!(kv.delete("a").unwrap());
    assert!(!kv.delete("a").unwrap());
    assert_eq!(kv.get("a").unwrap(), None);
}

#[test]
fn kv_increment_counts_from_zero_and_rejects_other_values() {
    let kv = Kv::new(MemoryKv::with([("text", "hello")]));
    assert_eq!(kv.increment("n", 5).unwrap(), 5);
    assert_eq!(kv.increment("n", -2).unwrap(), 3);
    assert_eq!(kv.increment("n", 0).unwrap(), 3);
    let err = kv.increment("text", 1).unwrap_err();
    assert_eq!(err.type_name(), "KvError");
    assert_eq!(
        err.message(),
        "kv increment `text`: the value is not a counter"
    );
}

#[test]
fn kv_compare_and_swap_checks_the_current_value() {
    let kv = Kv::new(MemoryKv::new());
    assert!(kv.compare_and_swap("lock", None, b"me").unwrap());
    assert!(!kv.compare_and_swap("lock", None, b"you").unwrap());
    assert!(!kv.compare_and_swap("lock", Some(b"you"), b"you").unwrap());
    assert!(kv.compare_and_swap("lock", Some(b"me"), b"you").unwrap());
    assert_eq!(kv.get("lock").unwrap().as_deref(), Some(&b"you"[..]));
}

#[test]
fn kv_typed_values_roundtrip_in_payload_format() {
    let store = MemoryKv::new();
    let kv = Kv::new(store.clone());
    let profile = Profile {
        name: "Ada".into(),
        visits: 3,
    };
    kv.set_as("p", &profile).unwrap();
    assert_eq!(kv.get_as::<Profile>("p").unwrap(), Some(profile));
    assert_eq!(kv.get_as::<Profile>("missing").unwrap(), None);

    // Stored as a protobuf payload value, readable as such.
    let bytes = store.value("p").unwrap();
    let value = <V as prost::Message>::decode(bytes.as_slice()).unwrap();
    assert_eq!(value.kind_name(), "basemodel");
}

#[test]
fn kv_typed_value_of_the_wrong_shape_is_a_serialization_error() {
    let kv = Kv::new(MemoryKv::new());
    kv.set_as("n", &7).unwrap();
    let err = kv.get_as::<Profile>("n").unwrap_err();
    assert_eq!(err.type_name(), "SerializationError");
    assert!(!err.is_retryable());
    kv.set("raw", b"\xff\xff").unwrap();
    assert_eq!(
        kv.get_as::<u32>("raw").unwrap_err().type_name(),
        "SerializationError"
    );
}

#[test]
fn kv_outage_is_a_retryable_kv_error() {
    let store = MemoryKv::new();
    let kv = Kv::new(store.clone());
    store.set_unavailable(true);
    let err = kv.get("a").unwrap_err();
    assert_eq!(err.type_name(), "KvError");
    assert!(err.is_retryable());
    store.set_unavailable(false);
    assert_eq!(kv.get("a").unwrap(), None);
}

#[test]
fn config_require_names_the_missing_key() {
    let config = Config::new(FixedConfig::new([("present", "yes")]));
    assert_eq!(config.require("present").unwrap(), "yes");
    let err = config.require("absent").unwrap_err();
    assert_eq!(err.type_name(), "ConfigError");
    assert_eq!(
        err.message(),
        "config key `absent` is not set for this plugin"
    );
    assert!(!err.is_retryable());
    assert_eq!(Config::new(FixedConfig::empty()).get("present"), None);
}

#[test]
fn config_never_prints_its_values() {
    let backend = FixedConfig::new([("password", "hunter2")]);
    assert!(!format!("{backend:?}").contains("hunter2"));
    assert!(!format!("{:?}", Config::new(backend)).contains("hunter2"));
}

#[test]
fn http_double_answers_by_method_and_url_and_records_requests() {
    let scripted = ScriptedHttp::new()
        .on(
            "get",
            "https://a.test/x",
            Response::new(200)
                .with_header("Content-Type", "text/plain")
                .with_body("x"),
        )
        .on("PUT", "https://a.test/x", Response::new(201));
    let http = Http::new(scripted.clone());

    let got = http.get("https://a.test/x").unwrap();
    assert_eq!((got.status(), got.text().unwrap()), (200, "x"));
    assert_eq!(got.header("content-type"), Some("text/plain"));
    let put = http
        .send(
            &Request::put("https://a.test/x")
                .with_header("X-Trace", "1")
                .with_body("new"),
        )
        .unwrap();
    assert_eq!(put.status(), 201);

    let err = http.send(&Request::delete("https://a.test/x")).unwrap_err();
    assert_eq!(err.type_name(), "HttpError");
    assert_eq!(
        err.message(),
        "ScriptedHttp has no answer for DELETE https://a.test/x"
    );

    let requests = scripted.requests();
    assert_eq!(
        requests.iter().map(Request::method).collect::<Vec<_>>(),
        ["GET", "PUT", "DELETE"]
    );
    assert_eq!(
        requests[1].headers(),
        [("x-trace".to_owned(), "1".to_owned())]
    );
    assert_eq!(requests[1].body(), b"new");
}

#[test]
fn http_transport_error_is_passed_through() {
    let http = Http::new(ScriptedHttp::new().on_error(
        "GET",
        "https://a.test/",
        Error::retryable("connection refused").with_type("HttpError"),
    ));
    let err = http.get("https://a.test/").unwrap_err();
    assert_eq!(
        (err.type_name(), err.message()),
        ("HttpError", "connection refused")
    );
    assert!(err.is_retryable());
}

#[test]
fn http_error_for_status_is_retryable_only_where_retrying_helps() {
    let mut scripted = ScriptedHttp::new();
    for status in [200, 302, 400, 404, 408, 429, 500, 503] {
        scripted = scripted.on(
            "GET",
            &format!("https://a.test/{status}"),
            Response::new(status).with_body("  why\n"),
        );
    }
    let http = Http::new(scripted);
    let outcome = |status: u16| {
        http.get(format!("https://a.test/{status}"))
            .unwrap()
            .error_for_status()
            .map(|r| r.status())
    };
    assert_eq!(outcome(200).unwrap(), 200);
    assert_eq!(outcome(302).unwrap(), 302);
    for (status, retryable) in [
        (400, false),
        (404, false),
        (408, true),
        (429, true),
        (500, true),
        (503, true),
    ] {
        let err = outcome(status).unwrap_err();
        assert_eq!(err.type_name(), "HttpStatusError");
        assert_eq!(err.is_retryable(), retryable, "{status}");
        assert_eq!(
            err.message(),
            format!("GET https://a.test/{status} answered {status}: why")
        );
    }
}

#[test]
fn http_text_of_binary_body_is_an_error() {
    let response = Response::new(200).with_body(vec![0xff, 0xfe]);
    assert_eq!(response.text().unwrap_err().type_name(), "HttpError");
    assert!(response.is_success());
    assert_eq!(response.into_body(), [0xff, 0xfe]);
}

#[derive(Serialize)]
struct Job {
    id: u64,
    tags: Vec<String>,
}

#[test]
fn enqueue_sends_struct_fields_as_keyword_arguments_with_options() {
    let recording = RecordingEnqueue::new();
    let enqueue = Enqueue::new(recording.clone());
    let options = EnqueueOptions::new()
        .delay(Duration::from_millis(250))
        .priority(3)
        .max_attempts(2)
        .idempotency_key("job-1");
    let id = enqueue
        .enqueue(
            "jobs:run",
            &Job {
                id: 1,
                tags: vec!["a".into()],
            },
            options.clone(),
        )
        .unwrap();

    let rows = recording.enqueued();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].id, rows[0].module.as_str(), rows[0].name.as_str()),
        (id, "jobs", "run")
    );
    assert_eq!(rows[0].options, options);
    assert_eq!(rows[0].args.get("id"), Some(&V::int(1)));
    assert_eq!(rows[0].args.get("tags"), Some(&V::list([V::string("a")])));
}

#[test]
fn enqueue_takes_maps_and_unit_as_keyword_arguments() {
    let recording = RecordingEnqueue::new();
    let enqueue = Enqueue::new(recording.clone());
    let kwargs = BTreeMap::from([("name", "Ada")]);
    assert_eq!(
        enqueue
            .enqueue("greet:hello", &kwargs, EnqueueOptions::new())
            .unwrap(),
        1
    );
    assert_eq!(
        enqueue
            .enqueue("noop:run", &(), EnqueueOptions::new())
            .unwrap(),
        2
    );
    let rows = recording.enqueued();
    assert_eq!(rows[0].args.get("name"), Some(&V::string("Ada")));
    assert!(rows[1].args.arguments.is_empty());
}

#[test]
fn enqueue_honours_idempotency_keys_in_the_double() {
    let recording = RecordingEnqueue::new();
    let enqueue = Enqueue::new(recording.clone());
    let once = || EnqueueOptions::new().idempotency_key("k");
    let first = enqueue.enqueue("a:b", &(), once()).unwrap();
    let second = enqueue.enqueue("a:b", &(), once()).unwrap();
    assert_eq!(first, second);
    assert_eq!(recording.enqueued().len(), 1);
}

#[test]
fn enqueue_rejects_bad_targets_and_arguments_before_sending() {
    let recording = RecordingEnqueue::new();
    let enqueue = Enqueue::new(recording.clone());
    for target in ["nocolon", ":name", "module:", "a:b:c"] {
        let err = enqueue
            .enqueue(target, &(), EnqueueOptions::new())
            .unwrap_err();
        assert_eq!(err.type_name(), "EnqueueError", "{target}");
        assert_eq!(
            err.message(),
            format!("cannot enqueue `{target}`: name the action as `module:name`")
        );
    }
    let err = enqueue
        .enqueue("a:b", &vec![1, 2], EnqueueOptions::new())
        .unwrap_err();
    assert_eq!(
        err.message(),
        "keyword arguments must serialize to a struct or a map, not a list"
    );
    assert!(!err.is_retryable());
    assert!(recording.enqueued().is_empty());
}

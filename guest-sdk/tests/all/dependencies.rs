//! `Dep<T>` parameters: injection of each built-in type, user-defined
//! dependencies, caching per invocation, failures, and what stays the same
//! for keyword arguments and `describe`.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use cairn_payload::workflow_argument_value::Kind;
use cairn_payload::{WorkflowArgumentValue as V, WorkflowArguments, WorkflowDictArgument};
use cairn_sdk::enqueue::EnqueueOptions;
use cairn_sdk::http::{Request, Response};
use cairn_sdk::log::Level;
use cairn_sdk::testing::{
    FixedConfig, FixedContext, MemoryKv, RecordingEnqueue, RecordingLog, ScriptedHttp,
};
use cairn_sdk::{
    action, dependency, Config, Context, Dep, Dependency, DependencyError, Enqueue, Error, Http,
    Kv, Log, Resolver,
};
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::{assert_error, assert_error_starts, call, call_err, MODULE};

// ---------------------------------------------------------------------------
// Construction counters: thread-local, as every test runs on its own thread.

thread_local! {
    static SHARED_BUILT: Cell<u32> = const { Cell::new(0) };
    static FRESH_BUILT: Cell<u32> = const { Cell::new(0) };
    static EXPENSIVE_BUILT: Cell<u32> = const { Cell::new(0) };
}

fn reset_counters() {
    SHARED_BUILT.with(|c| c.set(0));
    FRESH_BUILT.with(|c| c.set(0));
    EXPENSIVE_BUILT.with(|c| c.set(0));
}

fn built(counter: &'static std::thread::LocalKey<Cell<u32>>) -> u32 {
    counter.with(Cell::get)
}

fn bump(counter: &'static std::thread::LocalKey<Cell<u32>>) {
    counter.with(|c| c.set(c.get() + 1));
}

// ---------------------------------------------------------------------------
// Built-in dependencies, one action each.

#[action]
fn kv_roundtrip(key: String, value: String, kv: Dep<Kv>) -> Result<Option<String>, Error> {
    kv.set(&key, value.as_bytes())?;
    Ok(kv
        .get(&key)?
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
}

#[action]
fn config_value(key: String, config: Dep<Config>) -> Option<String> {
    config.get(&key)
}

#[action]
fn http_status(url: String, http: Dep<Http>) -> Result<u16, Error> {
    Ok(http.send(&Request::post(url).with_body("ping"))?.status())
}

#[derive(Serialize)]
struct Follow {
    n: i64,
}

#[action]
fn enqueue_follow_up(n: i64, enqueue: Dep<Enqueue>) -> Result<i64, Error> {
    enqueue.enqueue(
        "other:next",
        &Follow { n: n + 1 },
        EnqueueOptions::new().priority(-1),
    )
}

#[action]
fn log_twice(log: Dep<Log>) {
    log.info("first", &[("k", "v")]);
    log.warn("second", &[]);
}

#[action]
fn context_facts(context: Dep<Context>) -> (String, u32) {
    (context.action_id(), context.attempt())
}

#[test]
fn kv_is_injected_from_the_resolver() {
    let kv = MemoryKv::new();
    let resolver = Resolver::new().kv(kv.clone());
    let read = kv_roundtrip::call(&resolver, "k".into(), "v".into()).unwrap();
    assert_eq!(read.as_deref(), Some("v"));
    assert_eq!(kv.value("k").as_deref(), Some(&b"v"[..]));
}

#[test]
fn config_is_injected_from_the_resolver() {
    let resolver = Resolver::new().config(FixedConfig::new([("region", "eu")]));
    assert_eq!(
        config_value::call(&resolver, "region".into())
            .unwrap()
            .as_deref(),
        Some("eu")
    );
    assert_eq!(config_value::call(&resolver, "other".into()).unwrap(), None);
}

#[test]
fn http_is_injected_from_the_resolver() {
    let http = ScriptedHttp::new().on("POST", "https://api.test/ping", Response::new(204));
    let resolver = Resolver::new().http(http.clone());
    assert_eq!(
        http_status::call(&resolver, "https://api.test/ping".into()).unwrap(),
        204
    );
    let requests = http.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        (requests[0].method(), requests[0].body()),
        ("POST", &b"ping"[..])
    );
}

#[test]
fn enqueue_is_injected_from_the_resolver() {
    let enqueue = RecordingEnqueue::new();
    let resolver = Resolver::new().enqueue(enqueue.clone());
    assert_eq!(enqueue_follow_up::call(&resolver, 41).unwrap(), 1);
    let rows = enqueue.enqueued();
    assert_eq!(
        (rows[0].module.as_str(), rows[0].name.as_str()),
        ("other", "next")
    );
    assert_eq!(
        rows[0].args,
        WorkflowArguments::from_pairs([("n".to_owned(), V::int(42))])
    );
    assert_eq!(rows[0].options.priority, Some(-1));
}

#[test]
fn log_is_injected_from_the_resolver() {
    let log = RecordingLog::new();
    let resolver = Resolver::new().log(log.clone());
    log_twice::call(&resolver).unwrap();
    let records = log.records();
    assert_eq!(records.len(), 2);
    assert_eq!(
        (records[0].level, records[0].message.as_str()),
        (Level::Info, "first")
    );
    assert_eq!(records[0].fields, [("k".to_owned(), "v".to_owned())]);
    assert_eq!(records[1].level, Level::Warn);
}

#[test]
fn context_is_injected_from_the_resolver() {
    let resolver = Resolver::new().context(FixedContext::new("row-9", 3));
    assert_eq!(
        context_facts::call(&resolver).unwrap(),
        ("row-9".to_owned(), 3)
    );
}

#[test]
fn log_and_context_fall_back_to_the_native_modules_without_doubles() {
    let resolver = Resolver::new();
    log_twice::call(&resolver).unwrap();
    let context = resolver.resolve::<Context>().unwrap();
    assert_eq!(context.action_id(), cairn_sdk::context::action_id());
    assert!(context.deadline() > SystemTime::now());
}

// ---------------------------------------------------------------------------
// User-defined dependencies.

/// A client for some API, built from config and http.
pub struct ApiClient {
    base_url: String,
    token: String,
    http: Dep<Http>,
}

#[dependency]
fn api_client(config: Dep<Config>, http: Dep<Http>) -> Result<ApiClient, Error> {
    Ok(ApiClient {
        base_url: config.require("api_url")?,
        token: config.require("api_token")?,
        http,
    })
}

impl ApiClient {
    fn fetch(&self, path: &str) -> Result<String, Error> {
        let request = Request::get(format!("{}{path}", self.base_url))
            .with_header("Authorization", format!("Bearer {}", self.token));
        Ok(self
            .http
            .send(&request)?
            .error_for_status()?
            .text()?
            .to_owned())
    }
}

#[action]
fn fetch_path(path: String, api: Dep<ApiClient>) -> Result<String, Error> {
    api.fetch(&path)
}

fn api_resolver(http: &ScriptedHttp) -> Resolver {
    Resolver::new()
        .config(FixedConfig::new([
            ("api_url", "https://api.test"),
            ("api_token", "t0k"),
        ]))
        .http(http.clone())
}

#[test]
fn user_dependency_is_built_from_other_dependencies() {
    let http = ScriptedHttp::new().on(
        "GET",
        "https://api.test/a",
        Response::new(200).with_body("A"),
    );
    let resolver = api_resolver(&http);

    assert_eq!(fetch_path::call(&resolver, "/a".into()).unwrap(), "A");
    assert_eq!(
        http.requests()[0].header("authorization"),
        Some("Bearer t0k")
    );

    // And resolves on its own, as in a test of the dependency itself.
    let client = resolver.resolve::<ApiClient>().unwrap();
    assert_eq!(client.base_url, "https://api.test");
}

#[test]
fn action_can_be_called_with_hand_built_dependencies() {
    let http = ScriptedHttp::new().on("GET", "https://x.test/b", Response::new(200).with_body("B"));
    let client = ApiClient {
        base_url: "https://x.test".into(),
        token: "t".into(),
        http: Dep::new(Http::new(http)),
    };
    assert_eq!(fetch_path("/b".into(), Dep::new(client)).unwrap(), "B");
}

#[test]
fn provided_value_replaces_a_user_dependency() {
    let http = ScriptedHttp::new().on(
        "GET",
        "https://fake.test/c",
        Response::new(200).with_body("C"),
    );
    let fake = ApiClient {
        base_url: "https://fake.test".into(),
        token: "fake".into(),
        http: Dep::new(Http::new(http)),
    };
    // No config and no http: neither is needed when the client is provided.
    let resolver = Resolver::new().provide(fake);
    assert_eq!(fetch_path::call(&resolver, "/c".into()).unwrap(), "C");
}

// ---------------------------------------------------------------------------
// Caching: `Shared` is cached, `FreshThing` is not; each is needed by two
// other dependencies and by the action itself.

pub struct Shared;

#[dependency]
fn shared() -> Shared {
    bump(&SHARED_BUILT);
    Shared
}

pub struct FreshThing;

#[dependency(use_cache = false)]
fn fresh_thing() -> FreshThing {
    bump(&FRESH_BUILT);
    FreshThing
}

pub struct UsesBoth(
    #[allow(dead_code)] Dep<Shared>,
    #[allow(dead_code)] Dep<FreshThing>,
);

#[dependency]
fn uses_both(shared: Dep<Shared>, fresh: Dep<FreshThing>) -> UsesBoth {
    UsesBoth(shared, fresh)
}

pub struct AlsoUsesBoth(
    #[allow(dead_code)] Dep<Shared>,
    #[allow(dead_code)] Dep<FreshThing>,
);

#[dependency]
fn also_uses_both(shared: Dep<Shared>, fresh: Dep<FreshThing>) -> AlsoUsesBoth {
    AlsoUsesBoth(shared, fresh)
}

#[action]
fn share_things(
    _a: Dep<UsesBoth>,
    _b: Dep<AlsoUsesBoth>,
    _shared: Dep<Shared>,
    _fresh: Dep<FreshThing>,
) -> (u32, u32) {
    (built(&SHARED_BUILT), built(&FRESH_BUILT))
}

#[test]
fn cached_dependency_is_built_once_per_invocation() {
    reset_counters();
    let (shared, _) = share_things::call(&Resolver::new()).unwrap();
    assert_eq!(shared, 1);
}

#[test]
fn uncached_dependency_is_built_for_every_use() {
    reset_counters();
    let (_, fresh) = share_things::call(&Resolver::new()).unwrap();
    assert_eq!(
        fresh, 3,
        "once for each of the two dependencies and the action"
    );
}

#[test]
fn cache_lasts_one_invocation() {
    reset_counters();
    let resolver = Resolver::new();
    share_things::call(&resolver).unwrap();
    share_things::call(&resolver).unwrap();
    assert_eq!((built(&SHARED_BUILT), built(&FRESH_BUILT)), (2, 6));

    // Through the host's entry point too: each invoke is a new scope.
    reset_counters();
    call("share_things", vec![]).unwrap();
    let result = call("share_things", vec![]).unwrap();
    assert_eq!(result, V::tuple([V::int(2), V::int(6)]));
}

#[test]
fn a_resolver_is_one_scope_and_caches_for_as_long_as_it_lives() {
    reset_counters();
    let resolver = Resolver::new();
    let first = resolver.resolve::<Shared>().unwrap();
    let second = resolver.resolve::<Shared>().unwrap();
    assert!(std::ptr::eq(&*first, &*second));
    resolver.resolve::<FreshThing>().unwrap();
    resolver.resolve::<FreshThing>().unwrap();
    assert_eq!((built(&SHARED_BUILT), built(&FRESH_BUILT)), (1, 2));
    resolver.scope().resolve::<Shared>().unwrap();
    assert_eq!(built(&SHARED_BUILT), 2, "a new scope builds again");
}

// ---------------------------------------------------------------------------
// Failures.

pub struct Busy;

#[dependency]
fn busy() -> Result<Busy, Error> {
    Err(Error::retryable("upstream busy").with_type("BusyError"))
}

pub struct NeedsBusy(#[allow(dead_code)] Dep<Busy>);

#[dependency]
fn needs_busy(busy: Dep<Busy>) -> NeedsBusy {
    NeedsBusy(busy)
}

#[action]
fn with_busy(_busy: Dep<NeedsBusy>) -> u32 {
    bump(&EXPENSIVE_BUILT);
    1
}

pub struct Parsed(#[allow(dead_code)] i64);

#[dependency]
fn parsed() -> Result<Parsed, std::num::ParseIntError> {
    "x".parse().map(Parsed)
}

#[action]
fn with_parsed(_parsed: Dep<Parsed>) {}

/// Decode a `DependencyError`'s details.
#[derive(Debug, Deserialize, PartialEq)]
struct Details {
    dependency: String,
    path: Vec<String>,
    cause_type: String,
    cause_module: String,
}

fn details(err: &cairn_sdk::__private::ActionError) -> Details {
    let dict = WorkflowDictArgument::decode(err.details.as_deref().expect("details")).unwrap();
    cairn_payload::from_value(&V {
        kind: Some(Kind::DictValue(dict)),
    })
    .unwrap()
}

#[test]
fn failing_dependency_is_a_dependency_error_naming_it_and_the_chain() {
    reset_counters();
    let err = call_err("with_busy", vec![]);
    assert_error(
        &err,
        "DependencyError",
        "dependency `Busy` failed (via `NeedsBusy` -> `Busy`): upstream busy",
    );
    assert_eq!(err.module, "cairn_sdk");
    assert!(err.retryable, "retryable because the cause is");
    assert_eq!(
        details(&err),
        Details {
            dependency: "Busy".into(),
            path: vec!["NeedsBusy".into(), "Busy".into()],
            cause_type: "BusyError".into(),
            cause_module: "all::dependencies".into(),
        }
    );
    assert_eq!(built(&EXPENSIVE_BUILT), 0, "the action did not run");
}

#[test]
fn dependency_failing_with_a_std_error_keeps_its_type() {
    let err = call_err("with_parsed", vec![]);
    assert_error(
        &err,
        "DependencyError",
        "dependency `Parsed` failed: invalid digit found in string",
    );
    assert!(!err.retryable);
    let details = details(&err);
    assert_eq!(
        (details.cause_type.as_str(), details.cause_module.as_str()),
        ("ParseIntError", "core::num::error")
    );
}

#[test]
fn dependency_error_from_call_and_resolve_says_the_same() {
    let err = with_busy::call(&Resolver::new()).unwrap_err();
    assert_eq!(err.type_name(), "DependencyError");
    assert!(err.is_retryable());

    let err: DependencyError = Resolver::new().resolve::<NeedsBusy>().unwrap_err();
    assert_eq!(err.dependency(), "Busy");
    assert_eq!(err.path(), ["NeedsBusy", "Busy"]);
    assert_eq!(err.cause().unwrap().type_name(), "BusyError");
    assert!(!err.is_cycle());
}

// A cycle: `Chicken` needs `Egg`, which needs `Chicken`.
pub struct Chicken;
pub struct Egg;

#[dependency]
fn chicken(_egg: Dep<Egg>) -> Chicken {
    Chicken
}

#[dependency(use_cache = false)]
fn egg(_chicken: Dep<Chicken>) -> Egg {
    Egg
}

// A dependency that needs itself, implemented by hand.
pub struct Ouroboros;

impl Dependency for Ouroboros {
    const NAME: &'static str = "Ouroboros";

    fn construct(resolver: &Resolver) -> Result<Self, DependencyError> {
        resolver.resolve::<Ouroboros>()?;
        Ok(Ouroboros)
    }
}

#[action]
fn with_cycle(_chicken: Dep<Chicken>) {}

#[test]
fn dependency_cycle_is_an_error_not_a_stack_overflow() {
    let err = call_err("with_cycle", vec![]);
    assert_error(
        &err,
        "DependencyError",
        "dependency cycle: `Chicken` -> `Egg` -> `Chicken`",
    );
    assert!(!err.retryable);
    assert_eq!(details(&err).cause_type, "DependencyCycle");

    let err = Resolver::new().resolve::<Ouroboros>().unwrap_err();
    assert!(err.is_cycle());
    assert_eq!(
        err.to_string(),
        "dependency cycle: `Ouroboros` -> `Ouroboros`"
    );
}

// ---------------------------------------------------------------------------
// Keyword arguments and describe are unaffected.

/// Add `a` and `b`, logging through an injected `Log`.
#[action]
fn add_logged(a: i64, log: Dep<Log>, b: Option<i64>) -> i64 {
    bump(&EXPENSIVE_BUILT);
    log.debug("adding", &[]);
    a + b.unwrap_or(0)
}

#[test]
fn kwargs_bind_around_dependency_parameters() {
    let result = call("add_logged", vec![("a", V::int(40)), ("b", V::int(2))]).unwrap();
    assert_eq!(result, V::int(42));
    assert_eq!(
        call("add_logged", vec![("a", V::int(1))]).unwrap(),
        V::int(1)
    );
}

#[test]
fn dependency_parameter_is_not_a_keyword_argument() {
    reset_counters();
    let err = call_err(
        "add_logged",
        vec![("a", V::int(1)), ("log", V::string("x"))],
    );
    assert_error(&err, "ArgumentError", "unexpected argument `log`");

    let err = call_err("add_logged", vec![]);
    assert_eq!(err.message, "missing required argument `a`");
    assert_eq!(built(&EXPENSIVE_BUILT), 0);
}

#[test]
fn describe_lists_actions_with_dependencies_as_before() {
    let info = cairn_sdk::__private::describe(MODULE);
    let action = info
        .actions
        .iter()
        .find(|a| a.name == "add_logged")
        .expect("add_logged is registered");
    assert_eq!(
        action.description,
        "Add `a` and `b`, logging through an injected `Log`."
    );
    assert_eq!((action.timeout_ms, action.retry), (None, None));
}

// ---------------------------------------------------------------------------
// The host's entry point natively.

#[test]
fn invoke_resolves_from_the_resolver_installed_on_the_thread() {
    let kv = MemoryKv::new();
    cairn_sdk::testing::install(Resolver::new().kv(kv.clone()));
    let result = call(
        "kv_roundtrip",
        vec![("key", V::string("k")), ("value", V::string("v"))],
    );
    cairn_sdk::testing::uninstall();
    assert_eq!(result.unwrap(), V::string("v"));
    assert_eq!(kv.keys(), ["k"]);
}

#[test]
fn invoke_without_test_doubles_names_the_missing_one() {
    let err = call_err(
        "kv_roundtrip",
        vec![("key", V::string("k")), ("value", V::string("v"))],
    );
    assert_error_starts(
        &err,
        "DependencyError",
        "dependency `Kv` failed: no `cairn:plugin/kv` outside a component: give the resolver \
         a test double, e.g. `Resolver::new().kv(cairn_sdk::testing::MemoryKv::new())`",
    );
    assert_eq!(details(&err).cause_type, "MissingBackend");

    let err = call_err("fetch_path", vec![("path", V::string("/"))]);
    assert_eq!(details(&err).path, ["ApiClient", "Config"]);
}

#[test]
fn invoke_resolves_log_and_context_without_test_doubles() {
    cairn_sdk::context::set_native(cairn_sdk::context::NativeContext {
        action_id: "row-1".into(),
        attempt: 2,
        deadline: SystemTime::now() + Duration::from_secs(5),
    });
    let result = call("context_facts", vec![]).unwrap();
    assert_eq!(result, V::tuple([V::string("row-1"), V::int(2)]));
    assert_eq!(call("log_twice", vec![]).unwrap(), V::null());
}

#[test]
fn invoke_with_uses_the_given_resolver() {
    let args = cairn_payload::encode_arguments(&WorkflowArguments::from_pairs([(
        "key".to_owned(),
        V::string("region"),
    )]));
    let resolver = Resolver::new().config(FixedConfig::new([("region", "eu")]));
    let payload =
        cairn_sdk::__private::invoke_with(MODULE, "config_value", &args, &resolver).unwrap();
    match cairn_payload::deserialize_result_payload(&payload).unwrap() {
        cairn_payload::ResultPayload::Result(value) => assert_eq!(value, V::string("eu")),
        other => panic!("unexpected {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// `call` itself.

#[action]
async fn async_config(key: String, config: Dep<Config>) -> Option<String> {
    config.get(&key)
}

#[action]
fn refuses(amount: u32) -> Result<u32, std::num::TryFromIntError> {
    u8::try_from(amount).map(u32::from)
}

#[test]
fn call_of_an_async_action_is_async() {
    let resolver = Resolver::new().config(FixedConfig::new([("k", "v")]));
    let value = cairn_sdk::__private::block_on(async_config::call(&resolver, "k".into()))
        .unwrap()
        .unwrap();
    assert_eq!(value.as_deref(), Some("v"));
}

#[test]
fn call_reports_the_action_error_as_the_host_would() {
    let resolver = Resolver::new();
    assert_eq!(refuses::call(&resolver, 7).unwrap(), 7);
    let err = refuses::call(&resolver, 700).unwrap_err();
    assert_eq!(err.type_name(), "TryFromIntError");
    assert!(!err.is_retryable());
}

#[test]
fn enqueued_kwargs_read_back_into_a_map() {
    let enqueue = RecordingEnqueue::new();
    let resolver = Resolver::new().enqueue(enqueue.clone());
    enqueue_follow_up::call(&resolver, 1).unwrap();
    let kwargs: BTreeMap<String, i64> = enqueue.enqueued()[0].kwargs().unwrap();
    assert_eq!(kwargs, BTreeMap::from([("n".to_owned(), 2)]));
}

//! A plugin that uses three dependencies together: `Config` for the weather
//! API's address and key, `Http` to call it, and `Kv` to cache its answers
//! and count cache hits. The API client is a user-defined dependency built
//! from `Config` and `Http`.
//!
//! Imports `cairn:plugin/config`, `cairn:plugin/kv` and
//! `wasi:http/outgoing-handler` (with `wasi:http/types`), nothing else of
//! cairn's.
//!
//! # The weather API it expects
//!
//! Config keys: `api_url` (e.g. `http://127.0.0.1:8080`) and `api_key` (a
//! secret). `forecast` sends
//!
//! ```text
//! GET {api_url}/forecast?city={city, percent-encoded}
//! authorization: Bearer {api_key}
//! ```
//!
//! and expects `200` with a JSON body `{"summary": "sunny", "temperature_c": 21.5}`.
//!
//! # Caching
//!
//! The first answer for a city is stored in kv under `forecast:{city}` and
//! served from there until `forget` deletes it; each answer served from the
//! cache increments the counter `hits:{city}`.

use cairn_sdk::http::Request;
use cairn_sdk::{action, dependency, Config, Dep, Error, Http, Kv};
use serde::{Deserialize, Serialize};

cairn_sdk::plugin!(module = "weather");

/// What the weather API says about one city.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// A word or two: "sunny", "light rain".
    pub summary: String,
    /// Degrees Celsius.
    pub temperature_c: f64,
}

/// What `forecast` returns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// The city asked for.
    pub city: String,
    /// The API's summary.
    pub summary: String,
    /// The API's temperature, in degrees Celsius.
    pub temperature_c: f64,
    /// Whether this answer came from the cache rather than the API.
    pub from_cache: bool,
    /// How many answers for this city the cache has served, this one
    /// included (0 when this one came from the API).
    pub cache_hits: i64,
}

/// The weather API: its address and key from the plugin's config, requests
/// through the `Http` dependency.
pub struct ApiClient {
    base_url: String,
    api_key: String,
    http: Dep<Http>,
}

/// Build the client; fails (before the action runs) if the operator has not
/// set `api_url` or `api_key`.
#[dependency]
fn api_client(config: Dep<Config>, http: Dep<Http>) -> Result<ApiClient, Error> {
    Ok(ApiClient {
        base_url: config.require("api_url")?.trim_end_matches('/').to_owned(),
        api_key: config.require("api_key")?,
        http,
    })
}

impl ApiClient {
    /// The URL the report for `city` is fetched from.
    pub fn forecast_url(&self, city: &str) -> String {
        format!("{}/forecast?city={}", self.base_url, percent_encode(city))
    }

    /// Ask the API for `city`'s report.
    ///
    /// # Errors
    ///
    /// `HttpError` when the API cannot be reached and `HttpStatusError` for a
    /// 4xx or 5xx answer (both retryable when trying again may help);
    /// `UpstreamError` when the answer is not the expected JSON.
    pub fn report(&self, city: &str) -> Result<Report, Error> {
        let request = Request::get(self.forecast_url(city))
            .with_header("authorization", format!("Bearer {}", self.api_key))
            .with_header("accept", "application/json");
        let response = self.http.send(&request)?.error_for_status()?;
        serde_json::from_slice(response.body()).map_err(|err| {
            Error::new(format!(
                "the weather API's answer for {city} is not a report: {err}"
            ))
            .with_type("UpstreamError")
        })
    }
}

/// Today's weather for `city`, from the weather API or from the cache.
#[action(timeout = "30s", retries = 3, backoff = "500ms")]
pub fn forecast(city: String, api: Dep<ApiClient>, kv: Dep<Kv>) -> Result<Forecast, Error> {
    let cache_key = format!("forecast:{city}");
    if let Some(report) = kv.get_as::<Report>(&cache_key)? {
        let cache_hits = kv.increment(&format!("hits:{city}"), 1)?;
        return Ok(Forecast {
            city,
            summary: report.summary,
            temperature_c: report.temperature_c,
            from_cache: true,
            cache_hits,
        });
    }
    let report = api.report(&city)?;
    kv.set_as(&cache_key, &report)?;
    Ok(Forecast {
        city,
        summary: report.summary,
        temperature_c: report.temperature_c,
        from_cache: false,
        cache_hits: 0,
    })
}

/// Drop the cached report for `city`; returns whether there was one.
#[action]
pub fn forget(city: String, kv: Dep<Kv>) -> Result<bool, Error> {
    kv.delete(&format!("forecast:{city}"))
}

/// Percent-encode everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use cairn_sdk::http::Response;
    use cairn_sdk::testing::{FixedConfig, MemoryKv, ScriptedHttp};
    use cairn_sdk::{Error, Resolver};

    use super::*;

    const PARIS: &str = "https://weather.test/forecast?city=Paris";

    fn config() -> FixedConfig {
        FixedConfig::new([("api_url", "https://weather.test/"), ("api_key", "s3cret")])
    }

    fn sunny() -> Response {
        Response::new(200).with_body(r#"{"summary": "sunny", "temperature_c": 21.5}"#)
    }

    #[test]
    fn first_call_asks_the_api_with_the_key_and_caches_the_report() {
        let kv = MemoryKv::new();
        let http = ScriptedHttp::new().on("GET", PARIS, sunny());
        let resolver = Resolver::new()
            .config(config())
            .http(http.clone())
            .kv(kv.clone());

        let forecast = forecast::call(&resolver, "Paris".into()).unwrap();

        assert_eq!(
            forecast,
            Forecast {
                city: "Paris".into(),
                summary: "sunny".into(),
                temperature_c: 21.5,
                from_cache: false,
                cache_hits: 0,
            }
        );
        let requests = http.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].url(), PARIS);
        assert_eq!(requests[0].header("Authorization"), Some("Bearer s3cret"));
        assert_eq!(kv.keys(), ["forecast:Paris"]);
    }

    #[test]
    fn later_calls_are_served_from_the_cache_and_counted() {
        let kv = MemoryKv::new();
        let http = ScriptedHttp::new().on("GET", PARIS, sunny());
        let resolver = Resolver::new()
            .config(config())
            .http(http.clone())
            .kv(kv.clone());

        forecast::call(&resolver, "Paris".into()).unwrap();
        let second = forecast::call(&resolver, "Paris".into()).unwrap();
        let third = forecast::call(&resolver, "Paris".into()).unwrap();

        assert!(second.from_cache && third.from_cache);
        assert_eq!((second.cache_hits, third.cache_hits), (1, 2));
        assert_eq!(third.summary, "sunny");
        assert_eq!(http.requests().len(), 1, "only the miss reaches the API");
    }

    #[test]
    fn forget_drops_the_cached_report() {
        let kv = MemoryKv::new();
        let http = ScriptedHttp::new().on("GET", PARIS, sunny());
        let resolver = Resolver::new()
            .config(config())
            .http(http.clone())
            .kv(kv.clone());

        forecast::call(&resolver, "Paris".into()).unwrap();
        assert!(forget::call(&resolver, "Paris".into()).unwrap());
        assert!(!forget::call(&resolver, "Paris".into()).unwrap());
        assert!(
            !forecast::call(&resolver, "Paris".into())
                .unwrap()
                .from_cache
        );
        assert_eq!(http.requests().len(), 2);
    }

    #[test]
    fn city_names_are_percent_encoded() {
        let http = ScriptedHttp::new().on(
            "GET",
            "https://weather.test/forecast?city=S%C3%A3o%20Paulo",
            sunny(),
        );
        let resolver = Resolver::new()
            .config(config())
            .http(http)
            .kv(MemoryKv::new());

        assert_eq!(
            forecast::call(&resolver, "São Paulo".into()).unwrap().city,
            "São Paulo"
        );
    }

    #[test]
    fn missing_api_key_fails_resolution_naming_the_dependency_and_the_key() {
        let http = ScriptedHttp::new();
        let resolver = Resolver::new()
            .config(FixedConfig::new([("api_url", "https://weather.test")]))
            .http(http.clone())
            .kv(MemoryKv::new());

        let err = forecast::call(&resolver, "Paris".into()).unwrap_err();

        assert_eq!(err.type_name(), "DependencyError");
        assert_eq!(
            err.message(),
            "dependency `ApiClient` failed: config key `api_key` is not set for this plugin"
        );
        assert!(!err.is_retryable(), "the operator has to set it first");
        assert!(http.requests().is_empty());
    }

    #[test]
    fn server_error_is_retryable() {
        let http = ScriptedHttp::new().on("GET", PARIS, Response::new(503).with_body("overloaded"));
        let kv = MemoryKv::new();
        let resolver = Resolver::new().config(config()).http(http).kv(kv.clone());

        let err = forecast::call(&resolver, "Paris".into()).unwrap_err();

        assert_eq!(err.type_name(), "HttpStatusError");
        // The query string may carry a secret: errors name the URL without it.
        assert_eq!(
            err.message(),
            "GET https://weather.test/forecast?… answered 503: overloaded"
        );
        assert!(err.is_retryable());
        assert!(kv.keys().is_empty(), "nothing cached from a failure");
    }

    #[test]
    fn unreachable_api_is_retryable() {
        let http = ScriptedHttp::new().on_error(
            "GET",
            PARIS,
            Error::retryable("connection refused").with_type("HttpError"),
        );
        let resolver = Resolver::new()
            .config(config())
            .http(http)
            .kv(MemoryKv::new());

        let err = forecast::call(&resolver, "Paris".into()).unwrap_err();

        assert_eq!(err.type_name(), "HttpError");
        assert!(err.is_retryable());
    }

    #[test]
    fn rejected_key_is_not_retryable() {
        let http = ScriptedHttp::new().on("GET", PARIS, Response::new(401));
        let resolver = Resolver::new()
            .config(config())
            .http(http)
            .kv(MemoryKv::new());

        let err = forecast::call(&resolver, "Paris".into()).unwrap_err();

        assert_eq!(err.type_name(), "HttpStatusError");
        assert!(!err.is_retryable());
    }

    #[test]
    fn malformed_answer_is_an_upstream_error() {
        let http = ScriptedHttp::new().on("GET", PARIS, Response::new(200).with_body("<html>"));
        let resolver = Resolver::new()
            .config(config())
            .http(http)
            .kv(MemoryKv::new());

        let err = forecast::call(&resolver, "Paris".into()).unwrap_err();

        assert_eq!(err.type_name(), "UpstreamError");
    }

    #[test]
    fn kv_outage_is_retryable() {
        let kv = MemoryKv::new();
        kv.set_unavailable(true);
        let http = ScriptedHttp::new().on("GET", PARIS, sunny());
        let resolver = Resolver::new().config(config()).http(http).kv(kv);

        let err = forecast::call(&resolver, "Paris".into()).unwrap_err();

        assert_eq!(err.type_name(), "KvError");
        assert!(err.is_retryable());
    }

    #[test]
    fn api_client_resolves_from_the_doubles() {
        let resolver = Resolver::new().config(config()).http(ScriptedHttp::new());

        let client = resolver.resolve::<ApiClient>().unwrap();

        assert_eq!(
            client.forecast_url("Rio de Janeiro"),
            "https://weather.test/forecast?city=Rio%20de%20Janeiro"
        );
    }

    #[test]
    fn a_fake_client_can_replace_the_whole_dependency() {
        let http = ScriptedHttp::new().on("GET", "https://fake.test/forecast?city=Oslo", sunny());
        let fake = ApiClient {
            base_url: "https://fake.test".into(),
            api_key: "k".into(),
            http: Dep::new(Http::new(http)),
        };
        // No config at all: the provided client is used as is.
        let resolver = Resolver::new().provide(fake).kv(MemoryKv::new());

        assert_eq!(
            forecast::call(&resolver, "Oslo".into()).unwrap().summary,
            "sunny"
        );
    }
}

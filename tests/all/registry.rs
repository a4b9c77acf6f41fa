//! Registry conflict rules, with real components: the same digest twice is a
//! no-op, another digest for the same `module:name` is refused naming both
//! files, and the same action name in two modules is fine.

use crate::support::{engine, wasm, with_custom_section};
use anyhow::Result;
use cairn::key::ActionKey;
use cairn::plugin;
use cairn::registry::{ActionHandler, Registry};
use std::sync::Arc;

#[tokio::test]
async fn same_digest_twice_is_a_no_op() -> Result<()> {
    let rt = engine();
    let dir = tempfile::tempdir()?;
    let copy = dir.path().join("greet-copy.wasm");
    std::fs::copy(wasm("greet"), &copy)?;
    let registry = Registry::new();
    registry.register_plugin(Arc::new(plugin::load_file(&rt, &wasm("greet")).await?))?;
    registry.register_plugin(Arc::new(plugin::load_file(&rt, &copy).await?))?;
    assert_eq!(registry.names(), vec!["greet:hello".to_owned()]);
    Ok(())
}

#[tokio::test]
async fn other_digest_for_same_action_is_refused_naming_both_files() -> Result<()> {
    let rt = engine();
    let dir = tempfile::tempdir()?;
    let v2 = dir.path().join("greet-v2.wasm");
    std::fs::write(
        &v2,
        with_custom_section(&std::fs::read(wasm("greet"))?, "v2"),
    )?;
    let registry = Registry::new();
    let v1 = Arc::new(plugin::load_file(&rt, &wasm("greet")).await?);
    registry.register_plugin(v1.clone())?;
    let other = Arc::new(plugin::load_file(&rt, &v2).await?);
    assert_ne!(v1.digest, other.digest);
    let conflict = registry
        .register_plugin(other.clone())
        .expect_err("conflict");
    let text = conflict.to_string();
    assert!(
        text.contains("greet.wasm")
            && text.contains("greet-v2.wasm")
            && text.contains("greet:hello"),
        "{text}"
    );
    // The single-action API follows the same rule.
    let handler = Arc::new(ActionHandler::new(other, v1.actions[0].clone()));
    assert!(registry.register("greet", "hello", handler).is_err());
    // The original stays registered.
    assert_eq!(
        registry.get("greet", "hello").unwrap().plugin.digest,
        v1.digest
    );
    Ok(())
}

#[tokio::test]
async fn same_action_name_in_two_modules_is_fine() -> Result<()> {
    let rt = engine();
    let registry = Registry::new();
    let greet = Arc::new(plugin::load_file(&rt, &wasm("greet")).await?);
    registry.register_plugin(greet.clone())?;
    // Register greet's `hello` under another module name too.
    let handler = Arc::new(ActionHandler {
        key: ActionKey::new("other", "hello"),
        ..ActionHandler::new(greet.clone(), greet.actions[0].clone())
    });
    registry.register("other", "hello", handler)?;
    assert_eq!(
        registry.names(),
        vec!["greet:hello".to_owned(), "other:hello".to_owned()]
    );
    assert_eq!(registry.entries().len(), 2);
    assert!(registry.get("other", "hello").is_some());
    Ok(())
}

#[tokio::test]
async fn reset_unregisters_everything() -> Result<()> {
    let registry = Registry::new();
    registry.register_plugin(Arc::new(
        plugin::load_file(&engine(), &wasm("greet")).await?,
    ))?;
    assert!(!registry.names().is_empty());
    registry.reset();
    assert!(registry.names().is_empty());
    assert!(registry.snapshot().is_empty());
    Ok(())
}

//! The procedural macros behind `cairn_sdk::action` and
//! `cairn_sdk::dependency`.
//!
//! Use them through `cairn-sdk`, which documents them; this crate only exists
//! because procedural macros must live in a crate of their own.
//!
//! # Strategy
//!
//! `#[action]` leaves the author's function exactly as written (so it stays
//! callable, and unit-testable, as plain Rust) and adds, inside an anonymous
//! `const _: () = { ... };` block so nothing leaks into the author's
//! namespace:
//!
//! * an `invoke` shim `fn(&WorkflowArguments, &Resolver) -> Result<Vec<u8>,
//!   ActionError>` that binds every parameter (one place: [`bind_parameter`]:
//!   keyword arguments first, then `Dep<T>` dependencies from the resolver),
//!   calls the function (through `block_on` if it is `async`) and turns its
//!   return value into a result payload or an `action-error`;
//! * an `inventory::submit!` of a `cairn_sdk::__private::ActionEntry` with the
//!   action's name, doc comment, timeout and retry policy, which the plugin's
//!   `describe` and `invoke` find at run time.
//!
//! Outside that block it adds one item the author may name: a braced struct
//! with the function's name and visibility (types and functions live in
//! different namespaces, so both coexist), whose associated `call(&Resolver,
//! kwargs...)` runs the action as one invocation with its dependencies
//! resolved, for tests.
//!
//! `#[dependency]` leaves its function as written too and implements
//! `cairn_sdk::Dependency` for the type it returns: `construct` injects every
//! parameter from the resolver and calls the function.
//!
//! Everything the macro can check without type information (attribute keys,
//! duration syntax, parameter shapes) is checked here and reported as a
//! `compile_error!` pointing at the offending tokens. Everything else (a
//! parameter type that is not `Deserialize`, a return type that is not
//! `Serialize`) is left to the type checker, whose error then points at the
//! author's type.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{quote, quote_spanned};
use syn::ext::IdentExt;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{
    Expr, ExprLit, FnArg, GenericArgument, Ident, ItemFn, Lit, Meta, Pat, PatType, PathArguments,
    ReturnType, Token, Type,
};

/// Turn a plain function into a cairn action. See `cairn_sdk::action` for the
/// full documentation.
#[proc_macro_attribute]
pub fn action(attr: TokenStream, item: TokenStream) -> TokenStream {
    match expand(attr.into(), item.into()) {
        Ok(tokens) => tokens.into(),
        Err(err) => err.to_compile_error().into(),
    }
}

/// Turn a function into a dependency of the type it returns. See
/// `cairn_sdk::dependency` for the full documentation.
#[proc_macro_attribute]
pub fn dependency(attr: TokenStream, item: TokenStream) -> TokenStream {
    match expand_dependency(attr.into(), item.into()) {
        Ok(tokens) => tokens.into(),
        Err(err) => err.to_compile_error().into(),
    }
}

/// The `#[action(...)]` attribute's arguments after validation.
#[derive(Default)]
struct ActionAttrs {
    name: Option<String>,
    timeout_ms: Option<u64>,
    retries: Option<u32>,
    backoff_ms: Option<(u64, Span)>,
    max_backoff_ms: Option<(u64, Span)>,
}

/// Delay before the second attempt when `retries` is given without
/// `backoff`: long enough not to hammer a struggling dependency, short enough
/// that a transient blip costs about a second.
const DEFAULT_BACKOFF_MS: u64 = 1_000;
/// Cap on any single delay when `retries` is given without `max_backoff`: a
/// minute keeps a long retry chain responsive without busy-looping.
const DEFAULT_MAX_BACKOFF_MS: u64 = 60_000;

const KNOWN_KEYS: &str = "`name`, `timeout`, `retries`, `backoff`, `max_backoff`";

fn parse_attrs(attr: TokenStream2) -> syn::Result<ActionAttrs> {
    let mut attrs = ActionAttrs::default();
    if attr.is_empty() {
        return Ok(attrs);
    }
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(attr)?;
    let mut seen: Vec<String> = Vec::new();
    for meta in metas {
        let nv = match meta {
            Meta::NameValue(nv) => nv,
            other => {
                return Err(syn::Error::new(
                    other.span(),
                    format!("expected `key = value` in #[action(...)]; known keys: {KNOWN_KEYS}"),
                ))
            }
        };
        let key = nv
            .path
            .get_ident()
            .map(|i| i.unraw().to_string())
            .unwrap_or_default();
        if seen.contains(&key) {
            return Err(syn::Error::new(
                nv.path.span(),
                format!("`{key}` given more than once"),
            ));
        }
        seen.push(key.clone());
        let value = &nv.value;
        match key.as_str() {
            "name" => {
                let name = lit_str(value, "name", "\"other_name\"")?;
                validate_action_name(&name, value.span())?;
                attrs.name = Some(name);
            }
            "timeout" => {
                let ms = duration_ms(value, "timeout")?;
                attrs.timeout_ms = Some(ms);
            }
            "retries" => {
                let n = match value {
                    Expr::Lit(ExprLit {
                        lit: Lit::Int(int), ..
                    }) => int.base10_parse::<u32>()?,
                    _ => {
                        return Err(syn::Error::new(
                            value.span(),
                            "`retries` is an integer: the maximum number of attempts, \
                             including the first (e.g. `retries = 3`)",
                        ))
                    }
                };
                if n == 0 {
                    return Err(syn::Error::new(
                        value.span(),
                        "`retries` counts attempts including the first, so it must be at least 1",
                    ));
                }
                attrs.retries = Some(n);
            }
            "backoff" => attrs.backoff_ms = Some((duration_ms(value, "backoff")?, value.span())),
            "max_backoff" => {
                attrs.max_backoff_ms = Some((duration_ms(value, "max_backoff")?, value.span()))
            }
            _ => {
                return Err(syn::Error::new(
                    nv.path.span(),
                    format!("unknown #[action] attribute `{key}`; known keys: {KNOWN_KEYS}"),
                ))
            }
        }
    }
    if attrs.retries.is_none() {
        if let Some((_, span)) = attrs.backoff_ms.or(attrs.max_backoff_ms) {
            return Err(syn::Error::new(
                span,
                "`backoff` and `max_backoff` only apply with `retries = N`",
            ));
        }
    }
    let backoff = attrs.backoff_ms.map_or(DEFAULT_BACKOFF_MS, |(ms, _)| ms);
    let max_backoff = attrs
        .max_backoff_ms
        .map_or(DEFAULT_MAX_BACKOFF_MS, |(ms, _)| ms);
    if attrs.retries.is_some() && max_backoff < backoff {
        let span = attrs
            .max_backoff_ms
            .or(attrs.backoff_ms)
            .map_or_else(Span::call_site, |(_, span)| span);
        return Err(syn::Error::new(
            span,
            format!("`max_backoff` ({max_backoff}ms) is shorter than `backoff` ({backoff}ms)"),
        ));
    }
    Ok(attrs)
}

fn lit_str(value: &Expr, key: &str, example: &str) -> syn::Result<String> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s.value()),
        _ => Err(syn::Error::new(
            value.span(),
            format!("`{key}` is a string literal, e.g. `{key} = {example}`"),
        )),
    }
}

/// Action names form the registry key `module:name`: the rule is
/// `cairn_contract::check_name`, shared with the host.
fn validate_action_name(name: &str, span: Span) -> syn::Result<()> {
    cairn_contract::check_name("action", name).map_err(|e| syn::Error::new(span, e.to_string()))
}

/// Parse `"500ms"`, `"30s"`, `"5m"` or `"1h"` into milliseconds, with the
/// grammar the host uses too (`cairn_contract::parse_positive_duration`): a
/// unit is required and zero is refused.
fn duration_ms(value: &Expr, key: &str) -> syn::Result<u64> {
    let text = lit_str(value, key, "\"30s\"")?;
    let duration = cairn_contract::parse_positive_duration(&text)
        .map_err(|why| syn::Error::new(value.span(), format!("invalid `{key}` duration: {why}")))?;
    u64::try_from(duration.as_millis())
        .map_err(|_| syn::Error::new(value.span(), format!("`{key}` is too large")))
}

/// How the shim gets a parameter's value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ParamKind {
    /// Deserialized from the keyword argument named like the parameter.
    Kwarg,
    /// Resolved from the invocation's resolver: the type is spelled `Dep<..>`.
    Dependency,
}

/// One parameter of the action function, as the shim binds it.
struct Param {
    /// The parameter's identifier, as written (raw or not).
    ident: Ident,
    /// The keyword-argument name: the identifier without `r#`.
    key: String,
    ty: Type,
    kind: ParamKind,
}

/// Whether a parameter type is spelled `Dep<..>` (by its last path segment,
/// so `cairn_sdk::Dep<Kv>` counts). Decided on the spelling because a
/// macro cannot see types: a type alias for `Dep<T>` would be taken for a
/// keyword argument.
fn is_dependency_type(ty: &Type) -> bool {
    match ty {
        Type::Paren(p) => is_dependency_type(&p.elem),
        Type::Group(g) => is_dependency_type(&g.elem),
        Type::Path(path) if path.qself.is_none() => {
            path.path.segments.last().is_some_and(|segment| {
                segment.ident == "Dep"
                    && matches!(segment.arguments, PathArguments::AngleBracketed(_))
            })
        }
        _ => false,
    }
}

/// A parameter of the function `attribute` (`#[action]` or `#[dependency]`)
/// is on; `self` is rejected, for there is no value to call a method on.
fn typed_input<'a>(input: &'a FnArg, attribute: &str) -> syn::Result<&'a PatType> {
    match input {
        FnArg::Receiver(receiver) => Err(syn::Error::new(
            receiver.span(),
            format!("{attribute} functions cannot take `self`: write a free function"),
        )),
        FnArg::Typed(typed) => Ok(typed),
    }
}

fn parse_params(func: &ItemFn) -> syn::Result<Vec<Param>> {
    let mut params = Vec::new();
    for input in &func.sig.inputs {
        let typed = typed_input(input, "#[action]")?;
        let ident = match &*typed.pat {
            Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => pat.ident.clone(),
            other => {
                return Err(syn::Error::new(
                    other.span(),
                    "#[action] parameters must be plain identifiers: \
                     the identifier is the keyword argument's name",
                ))
            }
        };
        check_param_type(&typed.ty)?;
        let kind = if is_dependency_type(&typed.ty) {
            ParamKind::Dependency
        } else {
            ParamKind::Kwarg
        };
        params.push(Param {
            key: ident.unraw().to_string(),
            ident,
            ty: (*typed.ty).clone(),
            kind,
        });
    }
    Ok(params)
}

/// Arguments are deserialized into owned values, so borrowed and opaque types
/// cannot work; say so here rather than through a lifetime error.
fn check_param_type(ty: &Type) -> syn::Result<()> {
    match ty {
        Type::Reference(r) => Err(syn::Error::new(
            r.span(),
            "#[action] parameters must be owned types deserialized from the arguments \
             (e.g. `String` rather than `&str`)",
        )),
        Type::ImplTrait(t) => Err(syn::Error::new(
            t.span(),
            "#[action] parameters cannot be `impl Trait`: name a concrete type",
        )),
        Type::Paren(p) => check_param_type(&p.elem),
        Type::Group(g) => check_param_type(&g.elem),
        _ => Ok(()),
    }
}

/// The free function `attribute` (`#[action]` or `#[dependency]`) is on,
/// checked with [`check_signature`].
fn parse_function(item: TokenStream2, attribute: &str) -> syn::Result<ItemFn> {
    let func: ItemFn = syn::parse2(item).map_err(|err| {
        syn::Error::new(
            err.span(),
            format!("{attribute} applies to a free function: {err}"),
        )
    })?;
    check_signature(&func, attribute)?;
    Ok(func)
}

/// Reject what neither attribute can call: `attribute` is `#[action]` or
/// `#[dependency]`, for the messages.
fn check_signature(func: &ItemFn, attribute: &str) -> syn::Result<()> {
    let sig = &func.sig;
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            sig.generics.span(),
            format!("{attribute} functions cannot be generic: the SDK calls one concrete function"),
        ));
    }
    if let Some(where_clause) = &sig.generics.where_clause {
        return Err(syn::Error::new(
            where_clause.span(),
            format!("{attribute} functions cannot have a `where` clause"),
        ));
    }
    if let Some(unsafety) = &sig.unsafety {
        return Err(syn::Error::new(
            unsafety.span(),
            format!(
                "{attribute} functions cannot be `unsafe`: the host has no way to uphold its contract"
            ),
        ));
    }
    if let Some(abi) = &sig.abi {
        return Err(syn::Error::new(
            abi.span(),
            format!(
                "{attribute} functions cannot declare an ABI: the SDK calls them as Rust functions"
            ),
        ));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(syn::Error::new(
            variadic.span(),
            format!("{attribute} functions cannot be variadic"),
        ));
    }
    Ok(())
}

/// Whether the return type is a `Result` (by its last path segment, so
/// `std::result::Result<T, E>`, `anyhow::Result<T>`, `io::Result<T>` and
/// `cairn_sdk::Result<T>` all count). An error type must be `Display + 'static`.
fn returns_result(output: &ReturnType) -> bool {
    result_segment(output).is_some()
}

/// The last path segment of a `Result` return type, if it is one.
fn result_segment(output: &ReturnType) -> Option<&syn::PathSegment> {
    let ReturnType::Type(_, ty) = output else {
        return None;
    };
    let mut ty: &Type = ty;
    while let Type::Paren(p) = ty {
        ty = &p.elem;
    }
    match ty {
        Type::Path(path) if path.qself.is_none() => path
            .path
            .segments
            .last()
            .filter(|segment| segment.ident == "Result"),
        _ => None,
    }
}

/// The `Ok` type of a `Result` return type as written: its first generic
/// type argument (`Result<T, E>`, `anyhow::Result<T>`), if it has one.
fn result_ok_type(output: &ReturnType) -> Option<&Type> {
    let PathArguments::AngleBracketed(args) = &result_segment(output)?.arguments else {
        return None;
    };
    args.args.iter().find_map(|arg| match arg {
        GenericArgument::Type(ty) => Some(ty),
        _ => None,
    })
}

/// The doc comment, each line trimmed, joined by newlines, with leading and
/// trailing blank lines removed.
fn description(func: &ItemFn) -> String {
    let mut lines = Vec::new();
    for attr in &func.attrs {
        if !attr.path().is_ident("doc") {
            continue;
        }
        if let Meta::NameValue(nv) = &attr.meta {
            if let Expr::Lit(ExprLit {
                lit: Lit::Str(s), ..
            }) = &nv.value
            {
                for line in s.value().split('\n') {
                    lines.push(line.trim().to_owned());
                }
            }
        }
    }
    lines.join("\n").trim().to_owned()
}

/// The single place that decides how one parameter gets its value: a
/// keyword argument is deserialized from `kwargs`; a `Dep<T>` is resolved
/// from `resolver` (a failure becomes a `DependencyError` action-error).
///
/// The value is bound to `local`, a hygienic identifier, so a parameter named
/// like the function itself cannot shadow it in the call.
fn bind_parameter(param: &Param, local: &Ident, kwargs: &Ident, resolver: &Ident) -> TokenStream2 {
    let Param { key, ty, kind, .. } = param;
    match kind {
        ParamKind::Kwarg => quote_spanned! {ty.span()=>
            let #local: #ty = #kwargs.take(#key)?;
        },
        ParamKind::Dependency => quote_spanned! {ty.span()=>
            let #local: #ty = ::cairn_sdk::__private::inject::<#ty>(#resolver)?;
        },
    }
}

/// The keys `bind_parameter` reads from the keyword arguments, so the shim can
/// reject any other key before binding. Dependencies are not keyword
/// arguments: a key named like one is unexpected.
fn kwarg_keys(params: &[Param]) -> Vec<&str> {
    params
        .iter()
        .filter(|p| p.kind == ParamKind::Kwarg)
        .map(|p| p.key.as_str())
        .collect()
}

/// The struct named like the action, whose `call` runs the action as one
/// invocation with its dependencies resolved from a `Resolver` (see the
/// crate docs). `call` takes the keyword arguments as typed parameters, in
/// order, with the parameters' names; those are re-spanned hygienically so
/// that a parameter named like the function cannot shadow it.
fn call_item(func: &ItemFn, params: &[Param]) -> TokenStream2 {
    let vis = &func.vis;
    let fn_ident = &func.sig.ident;
    let resolver = Ident::new("__cairn_resolver", Span::mixed_site());
    let scope = Ident::new("__cairn_scope", Span::mixed_site());

    let mut inputs = Vec::new();
    let mut injections = Vec::new();
    let mut args = Vec::new();
    for (i, param) in params.iter().enumerate() {
        let ty = &param.ty;
        match param.kind {
            ParamKind::Kwarg => {
                let mut ident = param.ident.clone();
                ident.set_span(Span::mixed_site());
                inputs.push(quote!(#ident: #ty));
                args.push(ident);
            }
            ParamKind::Dependency => {
                let local = Ident::new(&format!("__cairn_dep_{i}"), Span::mixed_site());
                injections.push(quote_spanned! {ty.span()=>
                    let #local: #ty = ::cairn_sdk::__private::inject_for_call::<#ty>(&#scope)?;
                });
                args.push(local);
            }
        }
    }

    let output = &func.sig.output;
    let ok_type = if returns_result(output) {
        match (result_ok_type(output), output) {
            (Some(ok), _) => quote!(#ok),
            (None, ReturnType::Type(_, ty)) => {
                quote!(<#ty as ::cairn_sdk::__private::IsResult>::Ok)
            }
            (None, ReturnType::Default) => quote!(()),
        }
    } else {
        match output {
            ReturnType::Type(_, ty) => quote!(#ty),
            ReturnType::Default => quote!(()),
        }
    };
    let asyncness = &func.sig.asyncness;
    let awaited = if asyncness.is_some() {
        quote!(.await)
    } else {
        quote!()
    };
    let finish = if returns_result(output) {
        quote!(::cairn_sdk::__private::call_result(__cairn_ret))
    } else {
        quote!(::core::result::Result::Ok(__cairn_ret))
    };
    let struct_doc = format!(
        "Run the action `{fn_ident}` directly: see `call`. Generated by `#[cairn_sdk::action]`."
    );
    let call_doc = format!(
        "Run `{fn_ident}` as one invocation: its `Dep<..>` parameters resolved from a fresh \
         scope of `resolver`, its keyword arguments as given. Failures are reported as the \
         host would see them (`DependencyError` if a dependency fails)."
    );

    quote! {
        #[doc = #struct_doc]
        #[allow(non_camel_case_types, dead_code)]
        #vis struct #fn_ident {}

        #[allow(dead_code)]
        impl #fn_ident {
            #[doc = #call_doc]
            #vis #asyncness fn call(
                #resolver: &::cairn_sdk::Resolver,
                #(#inputs),*
            ) -> ::core::result::Result<#ok_type, ::cairn_sdk::Error> {
                let #scope = #resolver.scope();
                #(#injections)*
                let __cairn_ret = #fn_ident(#(#args),*) #awaited;
                #finish
            }
        }
    }
}

fn expand(attr: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    let attrs = parse_attrs(attr)?;
    let func = parse_function(item, "#[action]")?;
    let params = parse_params(&func)?;

    let fn_ident = &func.sig.ident;
    let name = match attrs.name {
        Some(name) => name,
        None => fn_ident.unraw().to_string(),
    };
    let description = description(&func);
    let timeout_ms = match attrs.timeout_ms {
        Some(ms) => quote!(::core::option::Option::Some(#ms)),
        None => quote!(::core::option::Option::None),
    };
    let retry = match attrs.retries {
        Some(max_attempts) => {
            let backoff = attrs.backoff_ms.map_or(DEFAULT_BACKOFF_MS, |(ms, _)| ms);
            let max_backoff = attrs
                .max_backoff_ms
                .map_or(DEFAULT_MAX_BACKOFF_MS, |(ms, _)| ms);
            quote! {
                ::core::option::Option::Some(::cairn_sdk::__private::RetryPolicy {
                    max_attempts: #max_attempts,
                    initial_backoff_ms: #backoff,
                    max_backoff_ms: #max_backoff,
                })
            }
        }
        None => quote!(::core::option::Option::None),
    };

    let kwargs = Ident::new("__cairn_kwargs", Span::mixed_site());
    let resolver = Ident::new("__cairn_resolver", Span::mixed_site());
    let keys = kwarg_keys(&params);
    let locals: Vec<Ident> = (0..params.len())
        .map(|i| Ident::new(&format!("__cairn_arg_{i}"), Span::mixed_site()))
        .collect();
    // Keyword arguments first: bad arguments fail before anything is built.
    let mut ordered: Vec<(&Param, &Ident)> = params.iter().zip(&locals).collect();
    ordered.sort_by_key(|(p, _)| p.kind == ParamKind::Dependency);
    let bindings = ordered
        .into_iter()
        .map(|(p, local)| bind_parameter(p, local, &kwargs, &resolver));
    let call_struct = call_item(&func, &params);
    let arg_idents = locals.iter();
    let call = if func.sig.asyncness.is_some() {
        quote!(::cairn_sdk::__private::block_on(#fn_ident(#(#arg_idents),*))?)
    } else {
        quote!(#fn_ident(#(#arg_idents),*))
    };
    // Spanned at the return type, so an unsuitable one is reported there.
    let output_span = match &func.sig.output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => func.sig.ident.span(),
    };
    let finish = if returns_result(&func.sig.output) {
        quote_spanned!(output_span=> ::cairn_sdk::__private::finish_result(#name, ::core::module_path!(), __cairn_ret))
    } else {
        quote_spanned!(output_span=> ::cairn_sdk::__private::finish_value(#name, &__cairn_ret))
    };

    Ok(quote! {
        #func

        #call_struct

        const _: () = {
            fn __cairn_invoke(
                __cairn_args: &::cairn_sdk::__private::WorkflowArguments,
                #resolver: &::cairn_sdk::Resolver,
            ) -> ::core::result::Result<
                ::std::vec::Vec<u8>,
                ::cairn_sdk::__private::ActionError,
            > {
                let #kwargs = ::cairn_sdk::__private::Kwargs::new(__cairn_args, &[#(#keys),*])?;
                #(#bindings)*
                let __cairn_ret = #call;
                #finish
            }

            ::cairn_sdk::__private::inventory::submit! {
                ::cairn_sdk::__private::ActionEntry {
                    name: #name,
                    description: #description,
                    timeout_ms: #timeout_ms,
                    retry: #retry,
                    invoke: __cairn_invoke,
                }
            }
        };
    })
}

const DEPENDENCY_KEYS: &str = "`use_cache`";

/// `#[dependency(use_cache = false)]`: whether the value is shared for the
/// invocation (the default) or built for every use.
fn parse_dependency_attrs(attr: TokenStream2) -> syn::Result<bool> {
    let mut use_cache = None;
    if attr.is_empty() {
        return Ok(true);
    }
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(attr)?;
    for meta in metas {
        let Meta::NameValue(nv) = meta else {
            return Err(syn::Error::new(
                meta.span(),
                format!(
                    "expected `key = value` in #[dependency(...)]; known keys: {DEPENDENCY_KEYS}"
                ),
            ));
        };
        if !nv.path.is_ident("use_cache") {
            return Err(syn::Error::new(
                nv.path.span(),
                format!("unknown #[dependency] attribute; known keys: {DEPENDENCY_KEYS}"),
            ));
        }
        if use_cache.is_some() {
            return Err(syn::Error::new(
                nv.path.span(),
                "`use_cache` given more than once",
            ));
        }
        match &nv.value {
            Expr::Lit(ExprLit {
                lit: Lit::Bool(b), ..
            }) => use_cache = Some(b.value),
            other => {
                return Err(syn::Error::new(
                    other.span(),
                    "`use_cache` is `true` (build once per invocation, the default) or `false` \
                     (build for every use)",
                ))
            }
        }
    }
    Ok(use_cache.unwrap_or(true))
}

fn expand_dependency(attr: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    let use_cache = parse_dependency_attrs(attr)?;
    let func = parse_function(item, "#[dependency]")?;
    if let Some(asyncness) = &func.sig.asyncness {
        return Err(syn::Error::new(
            asyncness.span(),
            "#[dependency] functions cannot be `async`: dependencies are built synchronously \
             before the action runs",
        ));
    }
    let output = &func.sig.output;
    let provided: &Type = if returns_result(output) {
        result_ok_type(output).ok_or_else(|| {
            syn::Error::new(
                output.span(),
                "write the return type as `Result<T, E>`: the dependency's type is `T`",
            )
        })?
    } else {
        match output {
            ReturnType::Type(_, ty) => ty,
            ReturnType::Default => {
                return Err(syn::Error::new(
                    func.sig.ident.span(),
                    "a #[dependency] fn returns the value it provides (`-> T` or \
                     `-> Result<T, E>`); `Dep<T>` parameters then get it",
                ))
            }
        }
    };
    let name = quote!(#provided).to_string().replace(' ', "");

    let resolver = Ident::new("__cairn_resolver", Span::mixed_site());
    let mut locals = Vec::new();
    let mut injections = Vec::new();
    for (i, input) in func.sig.inputs.iter().enumerate() {
        let typed = typed_input(input, "#[dependency]")?;
        let ty = &typed.ty;
        let local = Ident::new(&format!("__cairn_dep_{i}"), Span::mixed_site());
        injections.push(quote_spanned! {ty.span()=>
            let #local: #ty = #resolver.inject::<#ty>()?;
        });
        locals.push(local);
    }

    let fn_ident = &func.sig.ident;
    let body = if returns_result(output) {
        quote_spanned! {output.span()=>
            #fn_ident(#(#locals),*).map_err(|__cairn_err| {
                ::cairn_sdk::__private::dependency_failure(__cairn_err, ::core::module_path!())
            })
        }
    } else {
        quote!(::core::result::Result::Ok(#fn_ident(#(#locals),*)))
    };

    Ok(quote! {
        #func

        impl ::cairn_sdk::Dependency for #provided {
            const NAME: &'static str = #name;
            const USE_CACHE: bool = #use_cache;

            fn construct(
                #resolver: &::cairn_sdk::Resolver,
            ) -> ::core::result::Result<Self, ::cairn_sdk::DependencyError> {
                #(#injections)*
                #body
            }
        }
    })
}

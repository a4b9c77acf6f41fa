//! A bad plugin: its action never returns. The host must stop it at its
//! deadline (epoch interruption / fuel), not wait forever.

cairn_sdk::plugin!(module = "looper");

/// Spin forever doing arithmetic.
#[cairn_sdk::action]
pub fn spin() -> u64 {
    let mut x: u64 = 1;
    loop {
        // `black_box` keeps the optimizer from proving the loop pointless.
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        if std::hint::black_box(false) {
            return x;
        }
    }
}

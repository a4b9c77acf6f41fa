//! A bad plugin: allocates as much memory as it is told to. The host's
//! memory limit must stop it.

cairn_sdk::plugin!(module = "hog");

const MIB: usize = 1 << 20;

/// Allocate `mib` MiB in 1 MiB chunks, touching every page and keeping every
/// chunk alive; returns how many chunks it holds.
#[cairn_sdk::action]
pub fn eat(mib: u64) -> u64 {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    for i in 0..mib {
        let mut chunk = vec![0u8; MIB];
        // Write every 4 KiB page so the memory is really committed.
        for page in chunk.iter_mut().step_by(4096) {
            *page = i as u8 | 1;
        }
        chunks.push(std::hint::black_box(chunk));
    }
    std::hint::black_box(&chunks);
    chunks.len() as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn eat_returns_chunk_count() {
        assert_eq!(super::eat(2), 2);
    }
}

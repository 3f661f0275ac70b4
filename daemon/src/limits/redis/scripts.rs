//! The engine's Lua scripts, compiled in: each is `lib.lua` (clock, periods, the roll)
//! followed by what it needs, and `redis::Script` keeps its SHA-1 for EVALSHA.
//!
//! The rate window is the ring (`window_ring.lua`); the sorted-set log it was measured
//! against (`window_zset.lua`) is only built for that measurement in the tests.

use redis::Script;

macro_rules! lua {
    ($($file:literal),+) => {
        concat!($(include_str!(concat!("lua/", $file)), "\n"),+)
    };
}

/// How the rate window is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Window {
    /// A ring of the last N admission times: the engine's.
    Ring,
    /// A sorted-set log: measured against the ring, not used by the engine.
    #[cfg(test)]
    SortedSet,
}

pub(super) struct Scripts {
    pub admit: Script,
    pub revert: Script,
    pub peek: Script,
    pub settle: Script,
    pub renew: Script,
    pub sweep: Script,
    pub sweep_index: Script,
    pub seed: Script,
    pub publish: Script,
}

impl Scripts {
    pub(super) fn new(window: Window) -> Scripts {
        let (admit, revert, peek) = match window {
            Window::Ring => (
                lua!("lib.lua", "window_ring.lua", "admit.lua"),
                lua!("lib.lua", "window_ring.lua", "revert.lua"),
                lua!("lib.lua", "window_ring.lua", "peek.lua"),
            ),
            #[cfg(test)]
            Window::SortedSet => (
                lua!("lib.lua", "window_zset.lua", "admit.lua"),
                lua!("lib.lua", "window_zset.lua", "revert.lua"),
                lua!("lib.lua", "window_zset.lua", "peek.lua"),
            ),
        };
        Scripts {
            admit: Script::new(admit),
            revert: Script::new(revert),
            peek: Script::new(peek),
            settle: Script::new(lua!("lib.lua", "settle.lua")),
            renew: Script::new(lua!("lib.lua", "renew.lua")),
            sweep: Script::new(lua!("lib.lua", "sweep.lua")),
            sweep_index: Script::new(lua!("lib.lua", "sweep_index.lua")),
            seed: Script::new(lua!("lib.lua", "seed.lua")),
            publish: Script::new(lua!("lib.lua", "publish.lua")),
        }
    }

    pub(super) fn all(&self) -> [&Script; 9] {
        [
            &self.admit,
            &self.revert,
            &self.peek,
            &self.settle,
            &self.renew,
            &self.sweep,
            &self.sweep_index,
            &self.seed,
            &self.publish,
        ]
    }
}

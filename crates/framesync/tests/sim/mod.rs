//! The deterministic simulation's parts: the seed's world (`scenario`, `records`), simulated
//! time (`clock`), the network and the model servers (`net`, `transport`, `ss`, `rs`), how a
//! wave of requests reaches the RS (`dispatch`), the
//! driver (`world`), the invariants (`check`), and what a seed reports (`report`, `trace`).

pub mod check;
pub mod clock;
pub mod dispatch;
pub mod net;
pub mod records;
pub mod report;
pub mod rng;
pub mod rs;
pub mod rs_shapes;
pub mod scenario;
pub mod shapes;
pub mod ss;
pub mod trace;
pub mod transport;
pub mod world;

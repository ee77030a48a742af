//! What an attacker's review found, one module per finding area: each test tries the attack
//! black-box against the real bridge and shows it refused.

mod accounts;
mod bounded;
mod handover;
mod ids;
mod replays;
mod taps;
mod urls;
mod waits;

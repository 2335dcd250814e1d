//! Namespace sandbox tests, one binary: attacks a hostile model would try ([`attacks`], and
//! on both the namespace and the Podman backend: [`attacks_both_backends`]), privilege and
//! identity inside ([`privilege`]), many starts at once under load ([`concurrent_start`]), what PID 1 can see of edgeact ([`judge_memory`]) and
//! clean-up after signals ([`cleanup`]), and the sandbox an ordinary user starts ([`unprivileged`]). Each test skips with the reason where the sandbox
//! cannot start (not root, no user namespaces).

mod attacks;
mod attacks_both_backends;
mod cleanup;
mod concurrent_start;
mod judge_memory;
mod privilege;
mod sandbox_support;
mod unprivileged;

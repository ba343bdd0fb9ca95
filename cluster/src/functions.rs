//! The functions a plan may call, for the scheduler's sessions and the executors' registry:
//! DataFusion's and Ballista's, and Allegro's UDFs and UDAFs. Plans carry functions by name.

use std::sync::Arc;

use ballista_core::registry::BallistaFunctionRegistry;

/// Ballista's function registry with Allegro's functions added.
pub fn registry() -> BallistaFunctionRegistry {
    let mut r = BallistaFunctionRegistry::default();
    for f in allegro_udfs::all_udfs() {
        r.scalar_functions.insert(f.name().to_string(), Arc::new(f));
    }
    for f in allegro_udfs::all_udafs() {
        r.aggregate_functions
            .insert(f.name().to_string(), Arc::new(f));
    }
    r
}

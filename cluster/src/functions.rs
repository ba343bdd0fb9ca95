//! The functions a plan may call, for the scheduler's sessions and the executors' registry:
//! DataFusion's and Ballista's, and Allegro's UDFs and UDAFs. Plans carry functions by name.

use std::sync::Arc;

use ballista_core::registry::BallistaFunctionRegistry;

/// Ballista's function registry with Allegro's functions added.
pub fn registry() -> BallistaFunctionRegistry {
    let mut r = BallistaFunctionRegistry::default();
    // Ballista's defaults leave out DataFusion's functions over lists (`array_has`, …), which
    // the `traces` view's `services` column is queried with.
    for f in datafusion::functions_nested::all_default_nested_functions() {
        r.scalar_functions.insert(f.name().to_string(), f);
    }
    for f in allegro_udfs::all_udfs() {
        r.scalar_functions.insert(f.name().to_string(), Arc::new(f));
    }
    for f in allegro_udfs::all_udafs() {
        r.aggregate_functions
            .insert(f.name().to_string(), Arc::new(f));
    }
    r
}

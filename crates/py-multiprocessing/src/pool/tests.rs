//! How a `map`'s items travel, which only the pool sees; the rest of the pool is tested through
//! its public API in `tests/pool.rs`.
use super::*;

static SQUARE: Task = Task::new("square", Ok);
static TYPED_SQUARE: Task = crate::typed_task!("typed-square", |x: i64| Ok(x * x));

#[test]
fn items_of_the_tasks_own_type_travel_in_postcard_and_others_in_json() {
    assert_eq!(TYPED_SQUARE.encodings::<i64, i64>(), (Encoding::Postcard, Encoding::Postcard));
    assert_eq!(TYPED_SQUARE.encodings::<u32, u64>(), (Encoding::Json, Encoding::Json));
    assert_eq!(TYPED_SQUARE.encodings::<&Value, Value>(), (Encoding::Json, Encoding::Json));
    assert_eq!(SQUARE.encodings::<Value, Value>(), (Encoding::Json, Encoding::Json));
    let pool = ThreadPool::new(2).unwrap();
    // The same numbers both ways, and a u32 never read as postcard's zigzag i64.
    let own: Vec<i64> = pool.map_chunked(&TYPED_SQUARE, -5..5i64, Some(3)).unwrap();
    let other: Vec<u64> = pool.map_chunked(&TYPED_SQUARE, 0..5u32, Some(3)).unwrap();
    assert_eq!(own, [25, 16, 9, 4, 1, 0, 1, 4, 9, 16]);
    assert_eq!(other, [0, 1, 4, 9, 16]);
    pool.close();
    pool.join().unwrap();
}

//! The store's tables as diesel sees them, written by hand to match the migrations of every
//! backend (the column types are ones SQLite and Postgres both have).

diesel::table! {
    runs (run_id, recovery) {
        run_id -> Text,
        recovery -> Integer,
        name -> Text,
        mode -> Text,
        status -> Text,
        host -> Text,
        program -> Text,
        started_at -> BigInt,
        ended_at -> Nullable<BigInt>,
        params -> Nullable<Text>,
        env_from_prime -> Nullable<Text>,
        cause -> Nullable<Text>,
    }
}

diesel::table! {
    triggers (id) {
        id -> BigInt,
        run_id -> Text,
        recovery -> Integer,
        event -> Text,
        sequence -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    tasks (id) {
        id -> BigInt,
        run_id -> Text,
        recovery -> Integer,
        step -> Text,
        sequence -> Text,
        status -> Text,
        attempt -> Integer,
        host -> Nullable<Text>,
        pid -> Nullable<BigInt>,
        result -> Nullable<Text>,
        error -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
        failure_class -> Nullable<Text>,
    }
}

diesel::table! {
    delays (id) {
        id -> BigInt,
        run_id -> Text,
        recovery -> Integer,
        assoc -> Integer,
        sequence -> Text,
        due_at -> BigInt,
        fired -> Bool,
        created_at -> BigInt,
    }
}

diesel::table! {
    retries (id) {
        id -> BigInt,
        run_id -> Text,
        recovery -> Integer,
        step -> Integer,
        sequence -> Text,
        number -> Integer,
        due_at -> BigInt,
        taken -> Bool,
        created_at -> BigInt,
    }
}

diesel::table! {
    pools (name) {
        name -> Text,
        units -> Integer,
    }
}

diesel::table! {
    grants (run_id, recovery, step, sequence, attempt, pool) {
        pool -> Text,
        run_id -> Text,
        recovery -> Integer,
        step -> Text,
        sequence -> Text,
        attempt -> Integer,
        units -> Integer,
        granted_at -> BigInt,
    }
}

diesel::table! {
    run_requests (id) {
        id -> BigInt,
        run_id -> Text,
        recovery -> Integer,
        kind -> Text,
        requested_by -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    host_health (run_id, recovery, host) {
        run_id -> Text,
        recovery -> Integer,
        host -> Text,
        state -> Text,
        until_at -> Nullable<BigInt>,
        reason -> Nullable<Text>,
        failures -> Text,
        updated_at -> BigInt,
    }
}

mod accounts;
mod conformance;
mod dump;
mod lifecycle;
mod postgres;
mod schedules;
mod shares;
mod sqlite;

//! End-to-end suite of deskmail (grows with the daemons).

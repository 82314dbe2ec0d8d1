
$d647f809-1a2b-4c34-8e45-60718293a4b56
2023-05-01T10:00:00+02:002025-05-01T10:00:00+02:00
2025-07-01"
2026-06-30*;
$c0b7e1d2-6f0a-4d8e-8a51-3e2f4b6c7d12Exempelgymnasiet Ö21
$8192a3b4-c5d6-47e8-99f0-1b2c3d4e5f60	Svenska 122
$9203b4c5-d6e7-48f9-8a01-2c3d4e5f6071
Engelska 5:A
$11aa22bb-33cc-44dd-85ee-66ff77889900Naturvetenskapsprogrammet:E
$22bb33cc-44dd-45ee-86ff-778899001122Samhällsvetenskapsprogrammet
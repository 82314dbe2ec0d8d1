
$11aa22bb-33cc-44dd-85ee-66ff77889900:
2011-07-01T00:00:00+02:002023-07-01T00:00:00.000+02:00ENaturvetenskapsprogrammet â€“ inriktning naturvetenskap och samhÃ¤lle"
Inriktning*A
$22bb33cc-44dd-45ee-86ff-778899001122Naturvetenskapsprogrammet2GY:NANASB…
Gymnasiegemensamma Ã¤mnenÌ1
$8192a3b4-c5d6-47e8-99f0-1b2c3d4e5f60	Svenska 12
$9203b4c5-d6e7-48f9-8a01-2c3d4e5f6071
Engelska 5B‚
Programgemensamma Ã¤mnenÂ1
$a314c5d6-e7f8-4901-9b12-3d4e5f607182	Biologi 10
$b425d6e7-f809-4a12-8c23-4e5f60718293Fysik 1a
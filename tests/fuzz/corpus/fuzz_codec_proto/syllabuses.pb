
$8192a3b4-c5d6-47e8-99f0-1b2c3d4e5f606
2011-07-01T00:00:00+02:002022-07-01T12:00:00+02:00GY"SVE*Svenska2Svenska språket:SVESVE01B	Svenska 1HPXdbGY11jswer�
!Fördjupning i nordisk litteratur1Läsning av Lagerlöf, Strindberg och Södergran.Advanced Nordic literature"-Reading Lagerlöf, Strindberg and Södergran.x